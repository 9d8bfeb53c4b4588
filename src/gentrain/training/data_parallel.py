"""Data-parallel training on PyTorch's own process groups: torchrun, SLURM, or one process.

``torchrun --nproc_per_node=N -m gentrain ...`` (or a multi-task SLURM job) starts N
processes; ``setup`` joins them into one process group (gloo on CPU, nccl on CUDA, one
GPU per local rank) and returns the ``World`` the trainer asks about everything
distributed. With one process, ``World`` does nothing and costs nothing.

How N ranks train the same model as one process with the same ``trainer.batch_size``:

* the global batch is ``trainer.batch_size``: every rank draws the same seeded
  permutation and takes its own ``batch_size / N`` rows of each batch;
* every rank also draws the random numbers of the *whole* batch (noise, binarisation,
  augmentation: ``global_batch_randomness``) and keeps its rows, so the ranks' random
  generators stay equal and a run is the same model whatever N is (to float rounding);
* the models take one gradient per network with ``torch.autograd.grad`` (so losses never
  leak between networks), which DistributedDataParallel's hooks never see: instead
  ``GenerativeModel.update`` hands each network's gradients to ``average_gradients``,
  one all-reduce per network;
* BatchNorm layers become synchronised (``trainer.sync_batchnorm``, on by default), so
  the batch statistics are those of the global batch: torch's ``SyncBatchNorm`` on CUDA,
  ``GlobalBatchNorm`` below on CPU, where torch's refuses to run.

Evaluation uses every rank too: each draws and embeds its share of the samples and the
test images (``share``, ``gather_rows``), rank 0 computes the figures from the gathered
features and hands them to the others (``computed_on_main``), so they equal one process's.

Rank 0 alone writes (``gentrain.core.ranks``); every rank resumes from its ``last.ckpt``. A stop
(Ctrl-C, SIGTERM, ``trainer.max_seconds``) is agreed at the logging cadence, so all ranks
stop after the same step. A rank that dies or raises makes the others' next collective
fail at once, and a rank that hangs makes it time out (``GENTRAIN_DIST_TIMEOUT_S``,
default 900 s), each with a ``DataParallelError`` that names the rank and the phase.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import signal
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.overrides import TorchFunctionMode

from gentrain.core.errors import ConfigError, GentrainError

log = logging.getLogger("gentrain")

# GlobalBatchNorm needs a differentiable all-reduce on every torch gentrain supports (>= 2.2);
# torch.distributed.nn's is that one, deprecated in favour of a newer, private module.
warnings.filterwarnings(
    "ignore", "torch.distributed.nn.functional.all_reduce is deprecated", FutureWarning
)

TIMEOUT_ENV = "GENTRAIN_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 900


class DataParallelError(GentrainError):
    """A collective failed: another rank died, hung past the timeout, or lost its link."""


def launched_world_size() -> int:
    """How many processes the launcher started (torchrun's or submitit's WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def export_slurm_env() -> None:
    """In a submitit SLURM job of several tasks (``launcher=slurm_ddp``), set torch's
    env:// variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) from SLURM's
    with submitit's own helper. (Under ``srun torchrun ...`` torchrun sets them; a plain
    sbatch script that runs gentrain once is one process, whatever its task count.)"""
    tasks = int(os.environ.get("SLURM_NTASKS", "1"))
    if tasks <= 1 or "RANK" in os.environ or os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
        return
    from submitit.helpers import TorchDistributedEnvironment  # present: submitit runs us

    TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def timeout() -> datetime.timedelta:
    seconds = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_S))
    try:
        return datetime.timedelta(seconds=float(seconds))
    except ValueError:
        raise ConfigError(f"{TIMEOUT_ENV}={seconds!r} is not a number of seconds") from None


@dataclass
class World:
    """The ranks of this run, and every collective the trainer and models need."""

    device: torch.device
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    sync_batchnorm: bool = True
    owns_group: bool = False  # whether ``setup`` started the process group (and ends it)
    step: int = field(default=0, repr=False)  # the trainer's, for error messages
    # What the ranks are doing (training step, validation, evaluation, checkpoint), set by
    # the trainer, so that a failed or timed-out collective says where it stopped.
    phase: str = field(default="setup", repr=False)
    _randomness: GlobalBatchRandomness | None = field(default=None, repr=False)

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # --- setup ----------------------------------------------------------------------------
    def prepare(self, model: nn.Module) -> nn.Module:
        """Synchronise the model's BatchNorm layers and hand ``update`` the gradient
        average; the weights start equal on every rank (seeded), and are checked."""
        if not self.distributed:
            return model
        if self.sync_batchnorm:
            if self.device.type == "cuda":
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            else:
                model = GlobalBatchNorm.convert(model)
        model.data_parallel = self
        self._check_same_weights(model)
        return model

    def local_batch_size(self, batch_size: int) -> int:
        if batch_size % self.size:
            raise ConfigError(
                f"trainer.batch_size={batch_size} is the global batch, split over "
                f"{self.size} ranks: make it a multiple of {self.size}"
            )
        return batch_size // self.size

    # --- what the models call -------------------------------------------------------------
    def average_gradients(self, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        """One network's gradients averaged over the ranks, in one all-reduce."""
        flat = torch.cat([g.reshape(-1) for g in grads])
        self._all_reduce(flat, "averaging gradients")
        flat /= self.size
        return [f.view_as(g) for f, g in zip(flat.split([g.numel() for g in grads]), grads)]

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of ``value`` over the ranks (e.g. a batch statistic a decision uses)."""
        total = value.detach().clone()
        self._all_reduce(total, "averaging a statistic")
        return total / self.size

    # --- what the trainer calls -----------------------------------------------------------
    def global_batch_randomness(self, local_batch: int):
        if not self.distributed:
            return nullcontext()
        self._randomness = GlobalBatchRandomness(self, local_batch)
        return self._randomness

    @contextmanager
    def slice_randomness(self, local_slice: int) -> Iterator[None]:
        """Inside a step, draws of ``local_slice`` rows stand for the global slice (a
        model updating on slices of its batch, ``updates_per_batch``), so that the ranks
        draw different noise for their images; the step's own size again after."""
        mode = self._randomness
        if not self.distributed or mode is None:
            yield
            return
        step_size = mode.n
        mode.resize(local_slice)
        try:
            yield
        finally:
            mode.resize(step_size)

    def mean_terms(self, terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Logged loss terms averaged over the ranks: the global batch's, at log cadence."""
        if not self.distributed or not terms:
            return terms
        stacked = torch.stack(
            [torch.as_tensor(v, device=self.device).float() for v in terms.values()]
        )
        return dict(zip(terms, self.mean(stacked).unbind()))

    def shared_stop(self, stop: Any) -> Any:
        """``stop`` itself with one process; else an ``AgreedStop`` around it."""
        return AgreedStop(stop) if self.distributed else stop

    def agree_to_stop(self, stop: Any, out_of_time: bool, every: int) -> bool:
        """Every ``every`` steps, share the local stop signal and time-budget verdict, so
        all ranks stop after the same step; returns the agreed ``out_of_time``. Between
        those steps a stop waits (a rank stopping alone would hang the others)."""
        if not self.distributed:
            return out_of_time
        if self.step % every:
            return False
        flags = torch.tensor([float(out_of_time), float(stop.local_signal)], device=self.device)
        self._all_reduce(flags, "agreeing on a stop", op=dist.ReduceOp.MAX)
        out_of_time, signum = (int(f) for f in flags.tolist())
        if signum:
            stop.agree(signum)
        return bool(out_of_time)

    def restore_rng(self, state: dict[str, Any]) -> None:
        """After ``checkpoint.set_rng_state``: every rank's GPU generator continues from
        rank 0's (device 0's), which all ranks' equal draws kept equal to their own."""
        if self.distributed and self.device.type == "cuda" and "cuda" in state:
            torch.cuda.set_rng_state(state["cuda"][0].cpu(), device=self.device)

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` (any picklable object) on every rank."""
        if not self.distributed:
            return value
        return self._broadcast(value, "sharing rank 0's results")

    def share(self, count: int) -> range:
        """This rank's contiguous part of ``count`` items (batches, chunks): the ranks'
        parts, in rank order, are ``range(count)``."""
        return range(self.rank * count // self.size, (self.rank + 1) * count // self.size)

    def gather_rows(self, tensor: torch.Tensor, what: str) -> torch.Tensor:
        """Every rank's rows of ``tensor`` (of any length), concatenated in rank order, on
        every rank: with ``share``, the rows one process would hold. On the CPU."""
        if not self.distributed:
            return tensor
        local = tensor.to(self.device).contiguous()
        lengths = [torch.zeros(1, dtype=torch.long, device=self.device) for _ in range(self.size)]
        try:
            dist.all_gather(lengths, torch.tensor([len(local)], device=self.device))
            padded = local.new_zeros((int(max(lengths)), *local.shape[1:]))
            padded[: len(local)] = local
            parts = [torch.empty_like(padded) for _ in range(self.size)]
            dist.all_gather(parts, padded)
        except (RuntimeError, dist.DistBackendError) as exc:
            raise self._error(what, exc) from None
        return torch.cat([p[: int(n)] for p, n in zip(parts, lengths)]).cpu()

    def total(self, value: float, what: str) -> float:
        """The sum of ``value`` over the ranks."""
        if not self.distributed:
            return value
        summed = torch.tensor([value], dtype=torch.float64, device=self.device)
        self._all_reduce(summed, what)
        return float(summed.item())

    def computed_on_main(self, compute: Any, what: str) -> Any:
        """``compute()`` run on rank 0 alone, its result handed to every rank: work whose
        inputs every rank holds but only one needs to do (an evaluation's figures)."""
        if not self.distributed:
            return compute()
        result = None
        if self.is_main:
            with self._idle_ranks_threads():
                result = compute()
        return self._broadcast(result, what)

    def main_first(self, work: Any, what: str) -> Any:
        """``work()`` on rank 0, then on the others once it is done: the first call fills a
        cache (the feature classifier) that the later ones read. A failure on rank 0 ends
        the others' wait at once."""
        if not self.distributed:
            return work()
        result = work() if self.is_main else None
        try:
            dist.barrier()
        except (RuntimeError, dist.DistBackendError) as exc:
            raise self._error(what, exc) from None
        return result if self.is_main else work()

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()

    # --- internals ------------------------------------------------------------------------
    @contextmanager
    def _idle_ranks_threads(self) -> Iterator[None]:
        """On CPU, rank 0 working alone takes the threads of this node's waiting ranks
        (torchrun's ``LOCAL_WORLD_SIZE``): they sleep in a collective meanwhile."""
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        if self.device.type != "cpu" or local <= 1:
            yield
            return
        threads = torch.get_num_threads()
        torch.set_num_threads(threads * local)
        try:
            yield
        finally:
            torch.set_num_threads(threads)

    def _broadcast(self, value: Any, what: str) -> Any:
        box = [value]
        try:
            dist.broadcast_object_list(box, src=0)
        except (RuntimeError, dist.DistBackendError) as exc:
            raise self._error(what, exc) from None
        return box[0]

    def _all_reduce(self, tensor: torch.Tensor, what: str, op=dist.ReduceOp.SUM) -> None:
        try:
            dist.all_reduce(tensor, op=op)
        except (RuntimeError, dist.DistBackendError) as exc:
            raise self._error(what, exc) from None

    def _error(self, what: str, exc: BaseException) -> DataParallelError:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        first = re.sub(r"^\[[^\]]*\]\s*", "", first).split(". ")[0]  # gloo's source location
        return DataParallelError(
            f"rank {self.rank}/{self.size}: {what} during {self.phase} at step {self.step} "
            f"failed ({first}). Another rank died, raised or hung: its own log says why; "
            f"the run stops here. Resume all ranks with trainer.resume=auto; a rank that "
            f"needs longer than {TIMEOUT_ENV} (now {timeout().total_seconds():g} s) between "
            "collectives times out"
        )

    def _check_same_weights(self, model: nn.Module) -> None:
        with torch.no_grad():
            state = [v.float().sum() for v in model.state_dict().values() if v.is_floating_point()]
            local = torch.stack(state) if state else torch.zeros(1, device=self.device)
            low, high = local.clone(), local.clone()
            self._all_reduce(low, "checking the initial weights", op=dist.ReduceOp.MIN)
            self._all_reduce(high, "checking the initial weights", op=dist.ReduceOp.MAX)
        if not torch.equal(low, high):
            raise DataParallelError(
                "the ranks built different initial weights: give every rank the same seed "
                "and config (torchrun passes the same command line to all of them)"
            )


class AgreedStop:
    """A stop request (``trainer.StopRequested``) that turns true on every rank after the
    same step: the ranks share what each was sent at the logging cadence."""

    def __init__(self, local: Any) -> None:
        self.local = local
        self.signal_name: str | None = None

    def installed(self):
        return self.local.installed()

    def __bool__(self) -> bool:
        return self.signal_name is not None

    @property
    def local_signal(self) -> int:
        name = self.local.signal_name
        return signal.Signals[name].value if name else 0

    def agree(self, signum: int) -> None:
        self.signal_name = signal.Signals(signum).name  # this rank's, or a peer's


def setup(device: torch.device, sync_batchnorm: bool = True) -> World:
    """Join the process group the launcher described in the environment, if any."""
    export_slurm_env()
    size = launched_world_size()
    if size <= 1:
        return World(device=device, sync_batchnorm=sync_batchnorm)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        # One GPU per local rank; a launcher that shows each task only its own GPU is fine.
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise ConfigError(
            f"data-parallel training runs on CPU (gloo) or CUDA (nccl), not {device.type}; "
            "use device=cpu or device=cuda, or start one process"
        )
    owns_group = not dist.is_initialized()  # a caller's own group is kept as it is
    if owns_group:
        dist.init_process_group(backend, rank=rank, world_size=size, timeout=timeout())
    if rank != 0:
        log.setLevel(logging.WARNING)  # rank 0 reports; the others only warn
    log.info("data-parallel: %d ranks (%s), this is rank %d on %s", size, backend, rank, device)
    return World(device, rank, size, local_rank, sync_batchnorm, owns_group)


# --- the global batch's random numbers ------------------------------------------------------
def _size_and_rest(args: tuple, kwargs: dict, first: int) -> tuple[list[int] | None, tuple]:
    """The ``size`` of a factory call (``randn(2, 3)``, ``randn((2, 3))``, ``size=``), as a
    list, and the positional arguments before it."""
    if "size" in kwargs:
        return list(kwargs["size"]), args
    sized = args[first:]
    if len(sized) == 1 and isinstance(sized[0], list | tuple | torch.Size):
        return list(sized[0]), args[:first]
    if sized and all(isinstance(a, int) for a in sized):
        return list(sized), args[:first]
    return None, args


def _memory_format(t: torch.Tensor) -> torch.memory_format:
    """channels_last for an NHWC batch (trainer.channels_last), else contiguous: the order
    ``*_like`` fills a tensor in, which decides which element gets which number."""
    nhwc = t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if nhwc and not t.is_contiguous() else torch.contiguous_format


class GlobalBatchRandomness(TorchFunctionMode):
    """During one training step, random draws whose first dimension is the local batch
    are drawn for the global batch, and this rank keeps its rows.

    Every rank thus consumes its generator exactly as one process with the global batch
    would, and uses the same numbers for the same images. Covers what gentrain's models
    draw per image: ``randn``, ``rand``, ``randint``, ``randn_like``, ``rand_like`` and
    ``bernoulli`` (whose probabilities are gathered from all ranks first).
    """

    FACTORIES = {torch.randn: 0, torch.rand: 0}

    def __init__(self, world: World, local_batch: int) -> None:
        super().__init__()
        self.world = world
        self.resize(local_batch)

    def resize(self, local_batch: int) -> None:
        """Stand for draws of ``local_batch`` rows from now on."""
        self.n = local_batch
        self.rows = slice(self.world.rank * local_batch, (self.world.rank + 1) * local_batch)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in self.FACTORIES or func is torch.randint:
            first = self.FACTORIES.get(func, 0)
            if func is torch.randint:  # randint(high, size) or randint(low, high, size)
                first = next((i for i, a in enumerate(args) if not isinstance(a, int)), len(args))
            size, head = _size_and_rest(args, kwargs, first)
            if size and size[0] == self.n:
                kwargs.pop("size", None)
                out = func(*head, [self.n * self.world.size, *size[1:]], **kwargs)
                return out[self.rows]
        elif (
            func in (torch.randn_like, torch.rand_like) and args[0].dim() and len(args[0]) == self.n
        ):
            like = args[0]
            template = torch.empty(
                (self.n * self.world.size, *like.shape[1:]),
                dtype=kwargs.pop("dtype", None) or like.dtype,
                device=kwargs.pop("device", None) or like.device,
                memory_format=_memory_format(like),
            )
            return func(template, *args[1:], **kwargs)[self.rows]
        elif func is torch.bernoulli and isinstance(args[0], torch.Tensor) and len(args) == 1:
            p = args[0]
            if p.dim() and len(p) == self.n:
                parts = [torch.empty_like(p) for _ in range(self.world.size)]
                try:
                    dist.all_gather(parts, p.contiguous())
                except (RuntimeError, dist.DistBackendError) as exc:
                    raise self.world._error("gathering a batch to binarise", exc) from None
                return func(torch.cat(parts), **kwargs)[self.rows]
        return func(*args, **kwargs)


# --- BatchNorm over the global batch on CPU ---------------------------------------------------
class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch, for CPU ranks
    (torch's ``SyncBatchNorm`` runs on GPUs only). Mean and variance are all-reduced with
    ``torch.distributed.nn``'s differentiable all-reduce, so gradients flow through the
    statistics to every rank as in one process. Same parameters and buffers as BatchNorm."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = x.numel() // x.shape[1] * dist.get_world_size()
        mean = all_reduce(x.sum(dims)) / count
        centred = x - mean.view(shape)
        var = all_reduce(centred.pow(2).sum(dims)) / count  # two passes: no cancellation
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = self.momentum
                if momentum is None:  # a cumulative moving average, as BatchNorm's
                    momentum = 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(var.detach() * count / max(count - 1, 1), momentum)
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y

    @classmethod
    def convert(cls, module: nn.Module) -> nn.Module:
        """``module`` with every BatchNorm layer replaced, parameters and buffers kept (the
        optimisers, built later, see the same tensors; checkpoints keep their keys)."""
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, cls):
            converted = cls(
                module.num_features,
                module.eps,
                module.momentum,
                module.affine,
                module.track_running_stats,
            )
            if module.affine:
                converted.weight, converted.bias = module.weight, module.bias
            converted.running_mean = module.running_mean
            converted.running_var = module.running_var
            converted.num_batches_tracked = module.num_batches_tracked
            converted.train(module.training)
            return converted
        for name, child in module.named_children():
            module.add_module(name, cls.convert(child))
        return module
