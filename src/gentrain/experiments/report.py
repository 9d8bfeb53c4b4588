"""The comparison report of ``gentrain-compare``, built from its run directories alone.

Every number comes from a run's ``metrics.json`` (final) or ``history.jsonl`` (the curve),
so ``gentrain-compare --report-only`` rebuilds the same report at any time. Writes, in the
comparison directory: ``report.md``, ``report.html``, ``summary.json``, ``fid_vs_time.png``,
``samples_seed_<n>.png`` / ``reconstructions_seed_<n>.png`` (the arms side by side) and
``tb/`` (the table, grids and plot in TensorBoard, beside the runs' own event files).
"""

from __future__ import annotations

import json
import math
import shlex
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw, ImageFont

from gentrain.core.checkpoint import atomic_write_bytes
from gentrain.core.errors import GentrainError
from gentrain.core.paths import last_checkpoint
from gentrain.tracking.history import read_history

# (column title, metrics.json key, digits); "time" columns add the source run's time for a
# warm-started arm, since its cost includes training the model it started from.
COLUMNS = [
    ("parameters", "model/parameters", 0),
    ("train time (s)", "train/seconds", 1),
    ("wall time (s)", "time/wall_seconds", 1),
    ("images/s", "train/images_per_sec", 0),
    ("FID ↓", "val/fid", 1),
    ("KID ↓", "val/kid", 1),
    ("IS ↑", "val/is", 2),
    ("precision ↑", "val/precision", 3),
    ("recall ↑", "val/recall", 3),
    ("cond. accuracy ↑", "val/cond_accuracy", 3),
    ("intra-FID ↓", "val/intra_fid", 1),
    ("NLL (nats) ↓", "val/nll_iwae", 1),
    ("−ELBO (nats) ↓", "val/neg_elbo", 1),
    ("recon MSE ↓", "val/recon_mse", 2),
]
CUMULATIVE = {"train/seconds", "time/wall_seconds"}
# Columns only a conditional model fills: shown when any run has them, so a comparison of
# unconditional models gets no empty columns.
CONDITIONAL = {"val/cond_accuracy", "val/intra_fid"}
# The real-data row: the floors, and the classifier's accuracy on the real test images with
# their true labels (what conditional accuracy is for a perfect conditional model).
FLOOR_KEYS = {
    "val/fid": "val/fid_floor",
    "val/kid": "val/kid_floor",
    "val/cond_accuracy": "eval/classifier_accuracy",
}


@dataclass
class ArmResult:
    name: str
    label: str
    source: str | None
    runs: dict[int, dict[str, float]] = field(default_factory=dict)  # seed -> final metrics
    # seed -> the run's CUMULATIVE times plus, for a warm-started arm, its source run's
    costs: dict[int, dict[str, float]] = field(default_factory=dict)
    curves: dict[int, list[tuple[float, float]]] = field(default_factory=dict)  # (s, FID)
    commands: dict[int, str] = field(default_factory=dict)
    status: dict[int, str] = field(default_factory=dict)
    dirs: dict[int, Path] = field(default_factory=dict)


def read_metrics(run_dir: Path) -> dict[str, float]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    if "val/elbo" in metrics:
        metrics["val/neg_elbo"] = -metrics["val/elbo"]
    return metrics


def read_fid_curve(run_dir: Path) -> list[tuple[float, float]]:
    records = read_history(run_dir / "history.jsonl")
    return [(r["train_seconds"], r["val/fid"]) for r in records if "val/fid" in r]


def read_arm_results(out: Path) -> tuple[list[ArmResult], dict[str, Any]]:
    """Each arm's finished runs, with a warm-started arm's times made cumulative."""
    state = json.loads((out / "compare.json").read_text())
    arms = {a["name"]: ArmResult(a["name"], a["label"], a["init_from"]) for a in state["arms"]}
    for record in state["runs"].values():
        arm = arms.get(record["arm"])
        if arm is None:
            continue
        seed, run_dir = int(record["seed"]), out / record["dir"]  # relative since 0.1
        arm.commands[seed], arm.dirs[seed] = record["command"], run_dir
        arm.status[seed] = record["status"]
        if record["status"] == "done" and (run_dir / "metrics.json").is_file():
            arm.runs[seed] = read_metrics(run_dir)
            arm.curves[seed] = read_fid_curve(run_dir)
    for arm in arms.values():
        for seed, metrics in arm.runs.items():
            arm.costs[seed] = {k: metrics[k] for k in CUMULATIVE if k in metrics}
    for arm in arms.values():  # sources come first in the state, so their costs are final
        if not arm.source:
            continue
        source = arms.get(arm.source)
        for seed in list(arm.runs):
            if source is None or seed not in source.runs:
                # Without its source's cost the arm would look cheaper than it was.
                del arm.runs[seed], arm.curves[seed], arm.costs[seed]
                arm.status[seed] = f"left out: its source run ({arm.source}) is not finished"
                continue
            before = source.costs[seed]
            for key in CUMULATIVE:
                arm.costs[seed][key] = arm.costs[seed].get(key, 0.0) + before.get(key, 0.0)
            offset = before.get("train/seconds", 0.0)
            arm.curves[seed] = [(t + offset, f) for t, f in arm.curves[seed]]
    return list(arms.values()), state


def mean_std(values: list[float]) -> tuple[float, float | None]:
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


def cell(values: list[float | None], digits: int) -> str:
    """``mean ± std`` over seeds (sample std), ``—`` where the metric is not defined, and
    ``(n=K of N)`` where only K of the N runs have a finite value (a NaN/inf is not averaged)."""
    defined = [v for v in values if v is not None]
    finite = [v for v in defined if math.isfinite(v)]
    if not finite:
        return "—" if not defined else "not finite"
    mean, std = mean_std(finite)
    if digits == 0:
        text = f"{mean:,.0f}"
        text = text if std is None or std < 0.5 else f"{text} ± {std:,.0f}"
    else:
        text = f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"
    return text if len(finite) == len(defined) else f"{text} (n={len(finite)} of {len(defined)})"


def shown_columns(arms: list[ArmResult]) -> list[tuple[str, str, int]]:
    """``COLUMNS``, less the conditional ones when no run has them."""
    logged = {key for arm in arms for metrics in arm.runs.values() for key in metrics}
    return [c for c in COLUMNS if c[1] not in CONDITIONAL or c[1] in logged]


def table_rows(arms: list[ArmResult]) -> tuple[list[str], list[list[str]]]:
    columns = shown_columns(arms)
    header = ["model", "seeds", *[c[0] for c in columns]]
    rows = []
    for arm in arms:
        row = [arm.label, str(len(arm.runs))]
        for _, key, digits in columns:
            per_run = arm.costs if key in CUMULATIVE else arm.runs
            row.append(cell([m.get(key) for m in per_run.values()], digits))
        rows.append(row)
    floor = ["real data (floor)", "—"]
    for _, key, digits in columns:
        source = FLOOR_KEYS.get(key)
        values = [m[source] for arm in arms for m in arm.runs.values() if source in m]
        floor.append(cell(values[:1], digits))  # the same real images in every run
    rows.append(floor)
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
def side_by_side(panels: list[tuple[str, Path]], path: Path) -> bool:
    """The arms' grids in one row, each under its label; False if there is none."""
    images = [(label, Image.open(p).convert("RGB")) for label, p in panels if p.is_file()]
    if not images:
        return False
    scale = 2 if images[0][1].height < 400 else 1
    images = [
        (label, im.resize((im.width * scale, im.height * scale), Image.NEAREST))
        for label, im in images
    ]
    gap, head = 12, 32
    font = _font(18)
    width = sum(im.width for _, im in images) + gap * (len(images) + 1)
    height = max(im.height for _, im in images) + head + gap
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    x = gap
    for label, im in images:
        draw.text((x, 6), label, fill="black", font=font)
        canvas.paste(im, (x, head))
        x += im.width + gap
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return True


def _font(size: int) -> ImageFont.ImageFont:
    """DejaVu Sans from matplotlib (it has the arrow of "VAE→VAE-GAN"), else PIL's own."""
    from matplotlib import font_manager

    try:
        return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)
    except OSError:
        return ImageFont.load_default()


def same_noise(arms: list[ArmResult], seed: int) -> bool | None:
    """Whether every arm's grid of ``seed`` was drawn from the same noise (checkpoints)."""
    noises = []
    for arm in arms:
        ckpt = last_checkpoint(arm.dirs.get(seed, Path("/nonexistent")))
        if seed in arm.runs and ckpt.is_file():
            noises.append(torch.load(ckpt, map_location="cpu", weights_only=True)["fixed_noise"])
    if len(noises) < 2:
        return None
    return all(n.shape == noises[0].shape and torch.equal(n, noises[0]) for n in noises)


def plot_fid_vs_time(arms: list[ArmResult], floor: float | None, title: str, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not any(curve for arm in arms for curve in arm.curves.values()):
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for index, arm in enumerate(arms):
        color = f"C{index}"
        for n, (_, curve) in enumerate(sorted(arm.curves.items())):
            if not curve:
                continue
            t, fid = zip(*curve, strict=True)
            ax.plot(t, fid, "o-", color=color, alpha=0.85, label=arm.label if n == 0 else None)
    if floor is not None:
        ax.axhline(floor, color="grey", linestyle="--", label="real data (floor)")
    ax.set_yscale("log")
    ax.set_xlabel("training time (s), evaluation excluded")
    ax.set_ylabel("FID (log scale)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


# ---------------------------------------------------------------------------------------------
def build_report(out: Path) -> dict[str, Path]:
    """Write the report files in ``out``; return their paths by kind."""
    out = Path(out)
    arms, state = read_arm_results(out)
    if not any(arm.runs for arm in arms):
        raise GentrainError(f"no finished run under {out}: nothing to report")
    seeds = sorted({seed for arm in arms for seed in arm.runs})
    header, rows = table_rows(arms)
    any_run = next(m for arm in arms for m in arm.runs.values())
    grids = _side_by_side_grids(arms, seeds, out)
    plot = out / "fid_vs_time.png"
    title = f"FID against training time: {_dataset_name(arms)}, {' '.join(state['budget'])}"
    has_plot = plot_fid_vs_time(arms, any_run.get("val/fid_floor"), title, plot)
    report = Report(
        description=_describe(arms, state),
        header=header,
        rows=rows,
        notes=_notes(arms, seeds),
        grids=[(grid_title, path.name) for grid_title, path in grids],
        has_plot=has_plot,
        reproduce=[
            ReproduceLine(arm.label, seed, arm.status.get(seed, "?"), arm.commands[seed])
            for arm in arms
            for seed in sorted(arm.commands)
        ],
        whole_command=(
            shlex.join(["gentrain-compare", *state["argv"]]) if state.get("argv") else None
        ),
    )
    files = {"markdown": out / "report.md", "html": out / "report.html"}
    markdown = render_markdown(report)
    atomic_write_bytes(files["markdown"], markdown.encode())
    atomic_write_bytes(files["html"], render_html(report).encode())
    files["summary"] = out / "summary.json"
    summary = _summary(report, arms, seeds)
    atomic_write_bytes(files["summary"], (json.dumps(summary, indent=2) + "\n").encode())
    _tensorboard(out / "tb", markdown_table(header, rows), grids, plot if has_plot else None)
    return files


def _side_by_side_grids(arms: list[ArmResult], seeds: list[int], out: Path) -> list:
    """Per seed and kind, the arms' final grids in one image: [(title, path)]."""
    grids: list[tuple[str, Path]] = []
    for seed in seeds:
        for kind in ("samples", "reconstructions"):
            panels = [
                (arm.label, arm.dirs[seed] / "images" / f"{kind}.png")
                for arm in arms
                if seed in arm.runs
            ]
            path = out / f"{kind}_seed_{seed}.png"
            if side_by_side(panels, path):
                grids.append((f"{kind}, seed {seed}", path))
    return grids


def _notes(arms: list[ArmResult], seeds: list[int]) -> list[str]:
    """What a reader needs to read the table right: the statistics, the feature space,
    warm-started arms' costs, whether the grids share their noise."""
    notes = [
        "Mean ± sample standard deviation over the seeds; each run's numbers are in its "
        "`metrics.json`, its learning curve in `history.jsonl`.",
        "FID/KID/IS/precision/recall use the features of gentrain's dataset classifier "
        "(`eval.features`); compare them within this report, not with Inception-based "
        "figures from papers. The floor is the same metric between two sets of real images.",
        "NLL is the importance-weighted bound (VAE only); −ELBO where the model defines one.",
    ]
    if any(key in CONDITIONAL for key in (c[1] for c in shown_columns(arms))):
        notes.append(
            "Conditional models, sampled class-balanced: cond. accuracy is the share of samples "
            "the dataset classifier reads as the class they were drawn for (its floor: the "
            "classifier's accuracy on the real test images); intra-FID is the mean over classes "
            "of the FID between a class's samples and its real test images."
        )
    for arm in arms:
        if arm.source:
            source = next(a.label for a in arms if a.name == arm.source)
            notes.append(
                f"{arm.label} starts from the final {source} of the same seed; its times "
                f"include that {source}'s training, and its curve starts where the {source} ended."
            )
    for seed in seeds:
        same = same_noise(arms, seed)
        if same is not None:
            noise = (
                "the same noise in every arm." if same else "different noise (latent sizes differ)."
            )
            notes.append(f"Seed {seed}: the sample grids come from {noise}")
    return notes


@dataclass
class ReproduceLine:
    label: str
    seed: int
    status: str
    command: str


@dataclass
class Report:
    """Everything report.md and report.html show, built once and rendered twice."""

    description: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str]
    grids: list[tuple[str, str]]  # (title, file name beside the report)
    has_plot: bool
    reproduce: list[ReproduceLine]
    whole_command: str | None  # gentrain-compare arguments that redo everything


def render_markdown(report: Report) -> str:
    md = [f"# gentrain comparison\n\n{report.description}\n"]
    md += [markdown_table(report.header, report.rows), ""]
    md += [f"- {n}" for n in report.notes]
    md.append("\n## Samples and reconstructions\n")
    md += [f"**{title}**\n\n![{title}]({file})\n" for title, file in report.grids]
    if report.has_plot:
        md.append("## FID against training time\n\n![FID against training time](fid_vs_time.png)\n")
    md.append("## Reproduce\n")
    md.append(
        "Each command trains the run again from scratch into a new directory under "
        "`outputs/runs/` (a warm-started one from the same source run as here).\n"
    )
    md += [f"- {r.label}, seed {r.seed} ({r.status}):\n  `{r.command}`" for r in report.reproduce]
    if report.whole_command is not None:
        md.append(
            f"\nOr all at once: `{report.whole_command}` (in an existing directory, finished "
            "runs are kept and the others resume)."
        )
    return "\n".join(md) + "\n"


def render_html(report: Report) -> str:
    """``templates/report.html.j2`` filled in, every value HTML-escaped."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("gentrain.experiments", "templates"),
        autoescape=True,
        keep_trailing_newline=True,
    )
    return env.get_template("report.html.j2").render(report=report)


def _summary(report: Report, arms: list[ArmResult], seeds: list[int]) -> dict[str, Any]:
    """summary.json: the table as shown and every arm's numbers as read."""
    return {
        "description": report.description,
        "seeds": seeds,
        "table": {"header": report.header, "rows": report.rows},
        "arms": {
            arm.name: {
                "label": arm.label,
                "source": arm.source,
                "runs": {str(s): m for s, m in arm.runs.items()},  # as in metrics.json
                "costs": {str(s): c for s, c in arm.costs.items()},  # with the source's
                "fid_curve": {str(s): c for s, c in arm.curves.items()},
                "commands": {str(s): c for s, c in arm.commands.items()},
                "status": {str(s): c for s, c in arm.status.items()},
            }
            for arm in arms
        },
    }


def _dataset_name(arms: list[ArmResult]) -> str:
    """The dataset of the runs, from a run's saved config."""
    from omegaconf import OmegaConf

    for arm in arms:
        for run_dir in arm.dirs.values():
            path = run_dir / ".hydra" / "config.yaml"
            if path.is_file():
                return str(OmegaConf.load(path).dataset.name)
    return "?"


def _describe(arms: list[ArmResult], state: dict[str, Any]) -> str:
    budget = " ".join(state.get("budget", []))
    extra = " ".join(state.get("overrides", []))
    return (
        f"dataset: {_dataset_name(arms)}; budget per run: `{budget}`; "
        f"seeds: {', '.join(str(s) for s in state.get('seeds', []))}"
        + (f"; overrides for every run: `{extra}`" if extra else "")
    )


def _tensorboard(
    log_dir: Path, table: str, grids: list[tuple[str, Path]], plot: Path | None
) -> None:
    """The report in TensorBoard, beside the runs (``tensorboard --logdir <compare dir>``)."""
    import numpy as np
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(log_dir))
    try:
        writer.add_text("comparison/table", table, 0)
        for title, path in [*grids, *([("FID vs training time", plot)] if plot else [])]:
            image = np.asarray(Image.open(path).convert("RGB"))
            writer.add_image(f"comparison/{title}", image, 0, dataformats="HWC")
    finally:
        writer.close()
