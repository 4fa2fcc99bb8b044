"""Plots of a finished study: the front in objective space, candidates on the roofline."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure
from optuna.trial import FrozenTrial, TrialState

import searchspace
from costmodel import plot_roofline_networks
from search._config import ExperimentConfig
from search._record import TrialRecord, is_feasible

log = logging.getLogger("search")


def plot_pareto(
    trials: Sequence[FrozenTrial], cfg: ExperimentConfig, pareto: set[int], path: Path
) -> Path:
    """Every pair of objectives: infeasible (grey x), dominated (blue) and Pareto (red) trials."""
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.values is not None]
    names = [o.name for o in cfg.objectives]
    pairs = [(0, j) for j in range(1, len(names))]
    fig = Figure(figsize=(6 * len(pairs), 4.5))
    for k, (i, j) in enumerate(pairs):
        ax = fig.add_subplot(1, len(pairs), k + 1)
        groups = {
            "infeasible": [t for t in done if not is_feasible(t)],
            "dominated": [t for t in done if t.number not in pareto and is_feasible(t)],
            "Pareto": sorted((t for t in done if t.number in pareto), key=lambda t: t.values[j]),
        }  # fmt: skip
        style = {
            "infeasible": dict(color="0.6", marker="x", s=12, alpha=0.6),
            "dominated": dict(color="tab:blue", marker="o", s=14, alpha=0.5),
            "Pareto": dict(color="tab:red", marker="o", s=36, edgecolors="black"),
        }
        for label, ts in groups.items():
            if ts:
                ax.scatter([t.values[j] for t in ts], [t.values[i] for t in ts],
                           label=f"{label} ({len(ts)})", **style[label])  # fmt: skip
        front = groups["Pareto"]
        if len(front) > 1:
            ax.step([t.values[j] for t in front], [t.values[i] for t in front], where="post",
                    color="tab:red", lw=1)  # fmt: skip
        ax.set_xlabel(_label(names[j]))
        ax.set_ylabel(_label(names[i]))
        xs = [t.values[j] for t in done if t.values[j] > 0]
        if xs and max(xs) / min(xs) > 100:
            ax.set_xscale("log")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(f"study {cfg.study_name}: {len(done)} trials, {len(pareto)} on the front "
                 f"({cfg.sampler.name}, seed {cfg.seed})", fontsize=9)  # fmt: skip
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _label(name: str) -> str:
    if name.startswith("macs"):
        return name + " (multiply-accumulates; FLOPs = 2 x MACs)"
    return name


def plot_roofline(
    trials: Sequence[FrozenTrial],
    cfg: ExperimentConfig,
    pareto: set[int],
    out_dir: Path,
    max_points: int = 1500,
) -> list[Path]:
    """Each target's roofline chart with the feasible candidates, the front highlighted."""
    recorded = [
        (t, rec) for t in trials
        if t.state == TrialState.COMPLETE and (rec := TrialRecord.of(t)) is not None
    ]  # fmt: skip
    feasible = [(t, rec) for t, rec in recorded if is_feasible(t)]
    chosen = feasible[-max_points:] or recorded[-max_points:]
    if not chosen:
        return []
    archs = [searchspace.Architecture.from_string(rec.arch) for _, rec in chosen]
    paths = []
    for target in cfg.hardware:
        reports = [target.estimate(a) for a in archs]
        labels = [f"#{t.number}" for t, _ in chosen]
        hi = [i for i, (t, _) in enumerate(chosen) if t.number in pareto]
        path = out_dir / f"roofline_{target.name}.png"
        title = (f"{len(chosen)} candidates on {target.name} ({target.precision}, batch "
                 f"{target.batch}, {target.runtime}); Pareto front highlighted")  # fmt: skip
        plot_roofline_networks(
            reports, labels, target.profile, target.precision, path, title=title, highlight=hi
        )
        paths.append(path)
    return paths
