"""One HParams table for a directory of runs: a sweep or a comparison.

TensorBoard's HParams tab takes its columns from the first ``_hparams_/experiment`` summary
it finds. A run on its own writes one (so that its leading columns come first), but in a
sweep of different models the first run's columns would hide the other models' knobs. The
sweep (or comparison) directory therefore gets its own experiment summary, written at its
root from every run's hyperparameters, and its runs write none: the columns are the union
of the runs'; those whose values differ between the runs that have them lead, with the
model, learning rate, batch size and seed. (Whole numbers and booleans arrive as
text, as each run logs them: see the TensorBoard logger's ``_shown``.)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from gentrain.core.ranks import in_sweep_job
from gentrain.tracking.dashboard import ALWAYS_LEADING, metric_order

# Set for the runs of a group (gentrain-compare's children): they leave the experiment
# summary to the group. A sweep's jobs know from Hydra.
GROUP_ENV = "GENTRAIN_RUN_GROUP"
SUFFIX = ".hparams"  # the group's own event file, replaced whenever the table is rewritten


def in_group() -> bool:
    """Whether this run is one of a sweep's or a comparison's runs."""
    return bool(os.environ.get(GROUP_ENV)) or in_sweep_job()


def run_hparams(run_dir: Path) -> dict[str, Any]:
    """The hyperparameters a run logged (its last ``session_start_info``), by name."""
    from google.protobuf.json_format import MessageToDict
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import metadata

    found: dict[str, Any] = {}
    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.tag != metadata.SESSION_START_INFO_TAG:
                    continue
                content = value.metadata.plugin_data.content
                info = metadata.parse_session_start_info_plugin_data(content)
                found = {k: MessageToDict(v) for k, v in info.hparams.items()}
    return found


def write_group_hparams(group_dir: Path, run_dirs: list[Path], first_metric: str) -> int:
    """The group's experiment summary from its runs (those that logged hyperparameters);
    returns the number of columns."""
    from tensorboard.plugins.hparams import api_pb2
    from torch.utils.tensorboard import SummaryWriter

    values: dict[str, list[Any]] = {}
    metrics: list[str] = []
    for run_dir in run_dirs:
        hparams = run_hparams(run_dir)
        for name, value in hparams.items():
            values.setdefault(name, []).append(value)
        metrics_file = run_dir / "metrics.json"
        if hparams and metrics_file.is_file():
            final = json.loads(metrics_file.read_text())
            metrics += [m for m in metric_order(final, first_metric) if m not in metrics]
    if not values:
        return 0
    infos = [_column(name, seen) for name, seen in values.items()]
    infos.sort(key=lambda info: (not info.differs, info.name))
    experiment = api_pb2.Experiment(
        hparam_infos=infos,
        metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=m)) for m in metrics],
    )
    for old in group_dir.glob(f"events.out.tfevents.*{SUFFIX}"):
        old.unlink()
    with SummaryWriter(str(group_dir), filename_suffix=SUFFIX) as writer:
        writer.file_writer.add_summary(_experiment_summary(experiment))
    return len(infos)


def _column(name: str, seen: list[Any]) -> Any:
    from tensorboard.plugins.hparams import api_pb2

    info = api_pb2.HParamInfo(name=name)
    # Leading: what varies between the runs that have it, and what every table leads with.
    info.differs = len(set(seen)) > 1 or name in ALWAYS_LEADING
    if {type(v) for v in seen} <= {int, float}:
        info.type = api_pb2.DATA_TYPE_FLOAT64
        numbers = sorted(float(v) for v in seen)
        info.domain_interval.min_value, info.domain_interval.max_value = numbers[0], numbers[-1]
    else:  # text, as runs log whole numbers and booleans too (the TensorBoard logger)
        info.type = api_pb2.DATA_TYPE_STRING
        info.domain_discrete.extend(sorted({str(v) for v in seen}))
    return info


def _experiment_summary(experiment: Any) -> Any:
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams import metadata
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    content = HParamsPluginData(experiment=experiment, version=metadata.PLUGIN_DATA_VERSION)
    plugin_data = SummaryMetadata.PluginData(
        plugin_name=metadata.PLUGIN_NAME, content=content.SerializeToString()
    )
    value = Summary.Value(
        tag=metadata.EXPERIMENT_TAG, metadata=SummaryMetadata(plugin_data=plugin_data)
    )
    return Summary(value=[value])
