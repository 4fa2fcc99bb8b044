"""Taking results away: the Pareto table, exported sources with cost reports, models."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.trial import FrozenTrial

import searchspace
from costmodel import CostReport
from search._config import ExperimentConfig, HardwareTarget
from search._front import pareto_trials
from search._objectives import cost_value
from search._plots import plot_pareto, plot_roofline
from search._record import TrialRecord, is_feasible

log = logging.getLogger("search")


def trial_row(t: FrozenTrial, cfg: ExperimentConfig) -> dict[str, Any]:
    """One flat row: trial, objectives, constraint values, costs per target, arch."""
    rec = TrialRecord.of(t) or TrialRecord(arch="")
    row: dict[str, Any] = {"trial": t.number}
    for o, v in zip(cfg.objectives, t.values or [None] * len(cfg.objectives), strict=True):
        row[o.name] = v
    for name, v in t.constraints.items():
        row[f"constraint:{name}"] = v
    for target, costs in rec.costs.items():
        for k, v in costs.items():
            row[f"{k}@{target}"] = v
    row["arch"] = rec.arch
    return row


def pareto_table(study: optuna.Study, cfg: ExperimentConfig) -> list[dict[str, Any]]:
    """The front's rows, best first in the first objective (then by trial number)."""
    sign = -1.0 if cfg.objectives[0].direction == "maximize" else 1.0
    front = sorted(pareto_trials(study), key=lambda t: (sign * t.values[0], t.number))
    return [trial_row(t, cfg) for t in front]


BOUNDS = ("memory", "compute", "overhead")  # costmodel's roofline bounds, as printed


def bound_shares(report: CostReport) -> dict[str, float]:
    """Each bound's share of the summed layer time (layers are attributed to their bound)."""
    by_bound = dict.fromkeys(BOUNDS, 0.0)
    for layer in report.layers:
        if layer.bound in by_bound:
            by_bound[layer.bound] += layer.latency_s
    total = sum(by_bound.values())
    return {k: v / total if total else 0.0 for k, v in by_bound.items()}


def bound_line(study: optuna.Study, cfg: ExperimentConfig) -> str:
    """Which bound the primary latency is made of, on the front (median over its trials).

    Tells whether the search traded memory traffic and MACs (memory/compute-bound) or only
    counted kernels (overhead-bound) at this deployment setting.
    """
    front = pareto_trials(study)
    if not front:
        return ""
    shares = [bound_shares(cfg.primary.estimate(arch_of(t))) for t in front]
    med = {k: float(np.median([s[k] for s in shares])) for k in BOUNDS}
    p = cfg.primary
    return (
        f"latency at {p.profile}/{p.precision}/b{p.batch}/{p.runtime}: memory-bound "
        f"{med['memory']:.0%}, compute {med['compute']:.0%}, overhead {med['overhead']:.0%} "
        f"of summed layer time (front median, {len(front)} trial{'s' * (len(front) != 1)})"
    )


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain fixed-width table (MACs are multiply-accumulates; FLOPs = 2 x MACs)."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def get_trial(study: optuna.Study, number: int) -> FrozenTrial:
    trials = study.get_trials(deepcopy=False)
    if not 0 <= number < len(trials) or trials[number].number != number:
        match = [t for t in trials if t.number == number]
        if not match:
            raise KeyError(
                f"trial={number} is not in study {study.study_name!r} "
                f"({len(trials)} trials, numbers 0..{len(trials) - 1})"
            )
        return match[0]
    return trials[number]


def arch_of(t: FrozenTrial) -> searchspace.Architecture:
    rec = TrialRecord.of(t)
    if rec is None or not rec.arch:
        raise KeyError(f"trial {t.number} has no architecture (state {t.state.name})")
    return searchspace.Architecture.from_string(rec.arch)


class InfeasibleTrialError(ValueError):
    """Exporting a trial that breaks a constraint, without ``allow_infeasible``."""


def constraint_report(
    cfg: ExperimentConfig, reports: Mapping[str, CostReport]
) -> dict[str, dict[str, Any]]:
    """Each constraint of ``cfg``: its value for these reports, its limit, and whether it is met."""
    out: dict[str, dict[str, Any]] = {}
    for c in cfg.constraints:
        value = cost_value(c.metric, reports, cfg.primary.name)
        out[c.name] = {"value": value, "limit": c.limit, "met": value <= c.limit}
    return out


def export_arch(
    arch: searchspace.Architecture, target: HardwareTarget, out: Path, doc: Mapping[str, Any]
) -> list[Path]:
    """``out``: the source, its header costed on ``target``; beside it ``doc`` as cost JSON."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        searchspace.export_source(
            arch, hw=target.profile, precision=target.precision, batch=target.batch,
            runtime=target.runtime, target=target.name,
        )
    )  # fmt: skip
    report_path = out.with_suffix(".cost.json")
    report_path.write_text(json.dumps(doc, indent=1))
    return [out, report_path]


def export_trial(
    study: optuna.Study, cfg: ExperimentConfig, number: int, out: Path,
    allow_infeasible: bool = False,
) -> list[Path]:  # fmt: skip
    """A standalone PyTorch file (``searchspace.export_source``) and its cost report JSON.

    The header is costed on the study's primary target. A trial that breaks a constraint
    raises ``InfeasibleTrialError`` naming each one, unless ``allow_infeasible``. A trial the
    rung rule stopped ([fidelity]) has no full-budget objectives: its JSON says where it
    stopped and what it reported, and that it is no front candidate.
    """
    t = get_trial(study, number)
    rec = TrialRecord.of(t) or TrialRecord(arch="")
    arch = arch_of(t)
    reports = cfg.cost_reports(arch)
    constraints = constraint_report(cfg, reports)
    broken = {k: c for k, c in constraints.items() if not c["met"]}
    if broken and not allow_infeasible:
        raise InfeasibleTrialError(
            f"trial {t.number} is infeasible: "
            + "; ".join(
                f"{k} = {c['value']:.4g} > limit {c['limit']:.4g}" for k, c in broken.items()
            )
            + " (--allow-infeasible exports it anyway)"
        )
    doc = {
        "study": study.study_name,
        "trial": t.number,
        "state": t.state.name,
        "arch": arch.to_string(),
        "primary_target": dataclasses.asdict(cfg.primary),
        "feasible": not broken,
        "front_candidate": is_feasible(t),  # COMPLETE and feasible
        "objectives": dict(zip([o.name for o in cfg.objectives], t.values or [], strict=False)),
        "constraints": constraints,
        "params": reports[cfg.primary.name].total.params,
        "reports": {name: r.to_dict() for name, r in reports.items()},
    }
    if rec.stopped_at_budget is not None:
        doc["stopped_at_budget"] = rec.stopped_at_budget
    if rec.rungs:
        doc["rungs"] = [[b, v] for b, v in rec.rungs]
    return export_arch(arch, cfg.primary, out, doc)


def export_arch_string(text: str, target: HardwareTarget, out: Path) -> list[Path]:
    """Any architecture string, costed on ``target`` (no study, so no constraints)."""
    arch = searchspace.Architecture.from_string(text)
    report = target.estimate(arch)
    doc = {
        "arch": arch.to_string(),
        "primary_target": dataclasses.asdict(target),
        "params": report.total.params,
        "reports": {target.name: report.to_dict()},
    }
    return export_arch(arch, target, out, doc)


def write_results(study: optuna.Study, cfg: ExperimentConfig, out_dir: Path) -> tuple[str, ...]:
    """pareto.csv, pareto.json, the plots and each Pareto architecture's source."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = pareto_table(study, cfg)
    files: list[Path] = []
    columns = sorted({k for r in rows for k in r}, key=_column_order(cfg))
    csv_path = out_dir / "pareto.csv"
    with csv_path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)
    files.append(csv_path)
    json_path = out_dir / "pareto.json"
    json_path.write_text(
        json.dumps({"study": study.study_name, "config": cfg.to_dict(), "pareto": rows}, indent=1)
    )
    files.append(json_path)
    trials = study.get_trials(deepcopy=False)
    try:
        files.append(plot_pareto(trials, cfg, {r["trial"] for r in rows}, out_dir / "pareto.png"))
        files.extend(plot_roofline(trials, cfg, {r["trial"] for r in rows}, out_dir))
    except Exception as e:  # a plot must never cost the results
        log.warning("plotting failed: %s", e)
    for r in rows:
        try:
            files.extend(
                export_trial(study, cfg, r["trial"], out_dir / "pareto" / f"trial_{r['trial']}.py")
            )
        except Exception as e:
            log.warning("export of trial %s failed: %s", r["trial"], e)
    return tuple(str(p) for p in files)


def _column_order(cfg: ExperimentConfig) -> Any:
    first = ["trial"] + [o.name for o in cfg.objectives]

    def key(c: str) -> tuple[int, str]:
        if c in first:
            return (first.index(c), c)
        if c == "arch":
            return (10_000, c)
        return (100 + (0 if c.startswith("constraint:") else 1), c)

    return key


def chosen_trials(study: optuna.Study, cfg: ExperimentConfig, k: int) -> list[FrozenTrial]:
    """Up to ``k`` Pareto trials spread along the front (sorted by the first objective)."""
    front = pareto_trials(study)
    if not front or k <= 0:
        return []
    front.sort(key=lambda t: t.values[0])
    if len(front) <= k:
        return front
    idx = sorted({round(i * (len(front) - 1) / max(k - 1, 1)) for i in range(k)})
    return [front[i] for i in idx]


def log_models(tracking_uri: str, run_id: str, trials: Sequence[FrozenTrial]) -> None:
    """``mlflow.pytorch.log_model`` under run ``run_id`` (batch-2 example: not locked to 1)."""
    if not trials:
        return
    # Imported here: MLflow costs about 2.5 s of CPU to import, and only this needs it.
    import mlflow
    import mlflow.pytorch

    # mlflow.set_tracking_uri also sets $MLFLOW_TRACKING_URI for the whole process: put back
    # what was there, or the next run in this process would log to this run's store.
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(tracking_uri)
    try:
        with mlflow.start_run(run_id=run_id):
            for t in trials:
                arch = arch_of(t)
                model = searchspace.build(arch).eval()
                c, h, w = arch.input_shape
                example = np.random.default_rng(0).standard_normal((2, c, h, w)).astype("float32")
                mlflow.pytorch.log_model(
                    model,
                    name=f"pareto_trial_{t.number}",
                    input_example=example,
                    pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
                )
    finally:
        mlflow.set_tracking_uri(before)  # type: ignore[arg-type]  # None: unset again
