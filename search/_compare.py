"""Studies side by side: their feasible fronts on one plot and a hypervolume table.

Each study's numbers are ``summary_metrics`` (the front of ``python -m search pareto``,
its hypervolume in the config's fixed box), so the table agrees with the parent runs'
metrics in MLflow. The plot shows the first two objectives; a front is drawn as a step
line through its points, sorted by the first objective.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import optuna
from matplotlib.figure import Figure

from search._config import ExperimentConfig
from search._front import pareto_trials
from search._mlflow import TAG_ROLE, TAG_STUDY, MlflowView, summary_metrics

COLUMNS = ("study", "trials", "feasible", "front_size", "hypervolume")


@dataclass(frozen=True)
class StudySummary:
    """One study's row of the table, and its front in the first two objectives."""

    study: str
    trials: int
    feasible: int
    front_size: int
    hypervolume: float
    front: tuple[tuple[float, float], ...]  # (objective 0, objective 1), sorted

    def row(self) -> dict[str, str | int | float]:
        return {k: v for k, v in asdict(self).items() if k in COLUMNS}


def summarise(study: optuna.Study, cfg: ExperimentConfig) -> StudySummary:
    m = summary_metrics(study, cfg)
    front = sorted((t.values[0], t.values[1]) for t in pareto_trials(study) if len(t.values) > 1)
    return StudySummary(
        study.study_name, int(m["n_finished"]), int(m["n_feasible"]), int(m["pareto_size"]),
        m["hypervolume"], tuple(front),
    )  # fmt: skip


def format_summary(rows: Sequence[StudySummary]) -> str:
    """The table as fixed-width text (hypervolume to 4 decimals)."""
    cells = [list(COLUMNS)] + [
        [r.study, str(r.trials), str(r.feasible), str(r.front_size), f"{r.hypervolume:.4f}"]
        for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells)


def table_csv(rows: Sequence[StudySummary]) -> str:
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r.row())
    return out.getvalue()


def plot_comparison(rows: Sequence[StudySummary], axes: Sequence[str], path: Path) -> Path:
    """Fronts as step lines, one color per study, with the table under the plot."""
    fig = Figure(figsize=(8, 6.5))
    ax = fig.add_axes((0.15, 0.38, 0.8, 0.55))
    for r in rows:
        if r.front:
            xs, ys = zip(*r.front, strict=True)
            ax.step(xs, ys, where="post", marker="o", markersize=4, label=r.study)
        else:
            ax.plot([], [], label=f"{r.study} (no feasible trial)")
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1] if len(axes) > 1 else "")
    ax.set_title("feasible Pareto fronts")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    tab = fig.add_axes((0.05, 0.02, 0.9, 0.22))
    tab.axis("off")
    cells = [[r.study, r.trials, r.feasible, r.front_size, f"{r.hypervolume:.4f}"] for r in rows]
    tab.table(cellText=cells, colLabels=list(COLUMNS), loc="center")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def log_comparison(view: MlflowView, rows: Sequence[StudySummary], png: Path) -> str:
    """A run ``compare:A+B`` in ``view``'s experiment with the plot and the table (CSV, JSON)."""
    exp_id = view.ensure_experiment()
    names = [r.study for r in rows]
    run = view.client.create_run(
        exp_id, run_name="compare:" + "+".join(names),
        tags={TAG_ROLE: "compare", TAG_STUDY: ",".join(names)},
    )  # fmt: skip
    rid = run.info.run_id
    view.client.log_artifact(rid, str(png))
    view.client.log_text(rid, table_csv(rows), "compare.csv")
    view.client.log_text(rid, json.dumps([r.row() for r in rows], indent=1), "compare.json")
    view.client.set_terminated(rid, "FINISHED", end_time=int(time.time() * 1000))
    return rid
