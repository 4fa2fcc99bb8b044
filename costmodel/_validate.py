"""Validate a latency profile against the measured latency of networks.

``validate(hw, device, networks, batch)`` measures the forward latency of each
network it is given (anything ``Runnable``; ``python -m costmodel validate``
samples random architectures of a search space with its own seed, and
calibration draws its networks with another one, so it never sees these) and
predicts it with ``costmodel.estimate``; ``summarize`` reports rank agreement
(Spearman, Kendall tau-b), the median absolute percentage error and the share
within +-10% / +-25%; ``write_results`` writes them with a scatter plot to
``<out>/validation_<device>_b<batch>[_<runtime>].{json,md,png}``.

Measuring (``costmodel._measure.measure_samples``): warm-up, then 100 rounds
(20 above batch 8) that visit the networks in turn, one forward pass each (an
inner loop of >= 1 ms for faster networks), wall-clock time by default
(``costmodel._measure.make_clock``: what a user measures). A network's latency
is a quantile of its samples, the median by default (the statistic calibration
fits), with the 10th and 90th percentiles beside it (the spread).

A fixed reference network, timed in every round beside the others, probes how
fast the machine runs at the moment: a shared machine's speed drifts with its
neighbours' load (experiments/results/validation_cpu_protocol.md).
Calibration records the reference's time per batch, so validation also reports
latencies at the calibration's machine speed.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy.stats import kendalltau, spearmanr

from costmodel._estimate import estimate
from costmodel._measure import (
    CLOCK_FUNCTIONS,
    DEFAULT_CLOCK,
    DEFAULT_MIN_S,
    DEFAULT_QUANTILE,
    Runnable,
    default_rounds,
    lower_quantile,
    measure_samples,
    steady_state_allocator,
)
from hw_profiles import calibration_table, load

# Validation reports the median of the samples (what a user's repeated runs give), the
# statistic calibration fits (costmodel._measure.DEFAULT_QUANTILE).
VALIDATION_QUANTILE = DEFAULT_QUANTILE
VALIDATION_SEED = 7_000_001  # not the calibration seed (costmodel._bench.CALIBRATION_SEED)


def calibration_reference(hw: str, reference_arch: str) -> dict[int, float]:
    """Seconds of the reference network per batch recorded by calibration ({} if none).

    {} as well when the profile's calibration timed another reference network.
    """
    table = calibration_table(hw)
    if table.get("reference_arch") != reference_arch:
        return {}
    return {int(k.lstrip("b")): float(v) for k, v in table.get("reference_s", {}).items()}


@dataclass(frozen=True)
class ValidationPoint:
    arch: str
    measured_s: float
    predicted_s: float
    macs: int
    measured_median_s: float = float("nan")
    measured_p10_s: float = float("nan")
    measured_p90_s: float = float("nan")

    @property
    def rel_error(self) -> float:
        return self.predicted_s / self.measured_s - 1.0


@dataclass(frozen=True)
class ValidationSummary:
    n: int
    spearman: float
    kendall: float
    median_abs_error: float
    within_10: float
    within_25: float
    mean_signed_error: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(points: Sequence[ValidationPoint]) -> ValidationSummary:
    """Rank correlation and percentage errors of predicted vs measured latency."""
    if len(points) < 3:
        raise ValueError(f"need at least 3 points to validate, got {len(points)}")
    m = [p.measured_s for p in points]
    q = [p.predicted_s for p in points]
    errs = [abs(p.rel_error) for p in points]
    return ValidationSummary(
        n=len(points),
        spearman=float(spearmanr(m, q).statistic),
        kendall=float(kendalltau(m, q).statistic),
        median_abs_error=float(statistics.median(errs)),
        within_10=sum(e <= 0.10 for e in errs) / len(errs),
        within_25=sum(e <= 0.25 for e in errs) / len(errs),
        mean_signed_error=float(statistics.fmean(p.rel_error for p in points)),
    )


def scatter_plot(points: Sequence[ValidationPoint], title: str, path: Path) -> None:
    m = [p.measured_s * 1e3 for p in points]
    q = [p.predicted_s * 1e3 for p in points]
    fig = Figure(figsize=(5, 5))
    FigureCanvasAgg(fig)  # draws without touching the process-wide matplotlib backend
    ax = fig.add_subplot()
    ax.scatter(m, q, s=14)
    lo, hi = min(m + q) * 0.8, max(m + q) * 1.25
    ax.plot([lo, hi], [lo, hi], "k-", lw=0.8, label="y = x")
    for f, style in ((1.1, ":"), (1.25, "--")):
        ax.plot([lo, hi], [lo * f, hi * f], "k" + style, lw=0.6)
        ax.plot([lo, hi], [lo / f, hi / f], "k" + style, lw=0.6)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def validate(
    hw: str,
    device: str,
    networks: Sequence[Runnable],
    batch: int,
    runtime: str = "eager",
    *,
    reference: Runnable,
    seed: int = VALIDATION_SEED,
    threads: int = 1,
    rounds: int | None = None,
    repeats: int = 1,
    min_s: float = DEFAULT_MIN_S,
    quantile: float = VALIDATION_QUANTILE,
    space: str = "",
    clock: str = DEFAULT_CLOCK,
    timing_clock: Any = None,
) -> tuple[list[ValidationPoint], ValidationSummary, dict[str, Any]]:
    """Measure ``networks`` at ``batch`` and compare with their predicted latency on ``hw``.

    ``reference`` is timed in every round beside them; ``space`` (where the
    networks come from) and ``seed`` (torch's, for the weights) are recorded.
    ``clock`` names the clock (``costmodel._measure.make_clock``);
    ``timing_clock``, a ``costmodel._measure.Clock``, replaces it (tests).
    """
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    allocator = steady_state_allocator() if device == "cpu" else "caching (torch.cuda)"
    hw_profile = load(hw)
    t0 = time.perf_counter()
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    samples = measure_samples(
        [*networks, reference],
        batch,
        device,
        rounds=rounds,
        repeats=repeats,
        min_s=min_s,
        runtime=runtime,
        clock=timing_clock or clock,
    )
    # The reference's statistic is calibration's, whatever quantile the networks are shown at.
    reference_now = lower_quantile(samples.pop(), DEFAULT_QUANTILE)
    reference_then = (
        calibration_reference(hw, str(reference)).get(batch) if runtime == "eager" else None
    )
    points = []
    for net, ts in zip(networks, samples, strict=True):
        rep = estimate(net, hw=hw_profile, precision="fp32", batch=batch, runtime=runtime)
        points.append(
            ValidationPoint(
                str(net),
                lower_quantile(ts, quantile),
                rep.total.latency_s,
                rep.total.macs,
                statistics.median(ts),
                lower_quantile(ts, 0.1),
                lower_quantile(ts, 0.9),
            )
        )
    meta = {
        "hw": hw,
        "profile_source": hw_profile.source,
        "device": device,
        "space": space,
        "batch": batch,
        "runtime": runtime,
        "precision": "fp32",
        "seed": seed,
        "threads": threads,
        "rounds": rounds or default_rounds(batch),
        "repeats": repeats,
        "min_s": min_s,
        "quantile": quantile,
        "clock": f"{clock} ({CLOCK_FUNCTIONS[clock]})"
        if device == "cpu"
        else "wall (time.perf_counter, torch.cuda.synchronize around timed regions)",
        "statistic": f"{quantile:g}-quantile of the samples"
        + (" (the median)" if quantile == 0.5 else ""),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "allocator": allocator,
        "host": platform.node(),
        "torch_version": torch.__version__,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "measure_wall_s": round(time.perf_counter() - t0, 1),
        "reference_arch": str(reference),
        "reference_s": reference_now,
        # Calibration's machine speed over now: > 1 when the machine runs faster now.
        "speed_factor": reference_then / reference_now if reference_then else None,
    }
    return points, summarize(points), meta


def write_results(
    points: Sequence[ValidationPoint],
    summary: ValidationSummary,
    meta: dict[str, Any],
    out_dir: Path,
    stem: str,
    command: str,
) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    js, md, png = (out_dir / f"{stem}.{ext}" for ext in ("json", "md", "png"))

    def vs(field: str) -> ValidationSummary | None:
        pts = [
            replace(p, measured_s=getattr(p, field))
            for p in points
            if math.isfinite(getattr(p, field))
        ]
        return summarize(pts) if len(pts) >= 3 else None

    median_summary, decile_summary = vs("measured_median_s"), vs("measured_p10_s")
    factor = meta.get("speed_factor")
    normalized = (
        summarize(
            [
                replace(
                    p,
                    measured_s=p.measured_s * factor,
                    measured_median_s=p.measured_median_s * factor,
                )
                for p in points
            ]
        )
        if factor
        else None
    )
    doc = {
        "command": command,
        "meta": meta,
        "summary": summary.to_dict(),
        "summary_vs_median": median_summary.to_dict() if median_summary else None,
        "summary_vs_lower_decile": decile_summary.to_dict() if decile_summary else None,
        "summary_speed_normalized": normalized.to_dict() if normalized else None,
        "points": [{**asdict(p), "rel_error": p.rel_error} for p in points],
    }
    js.write_text(json.dumps(doc, indent=1) + "\n")

    def row(label: str, s: ValidationSummary) -> str:
        return (
            f"| {label} | {s.n} | {s.spearman:.3f} | {s.kendall:.3f} "
            f"| {s.median_abs_error:.1%} | {s.within_10:.0%} | {s.within_25:.0%} "
            f"| {s.mean_signed_error:+.1%} |"
        )

    q = meta.get("quantile", VALIDATION_QUANTILE)
    load = meta.get("loadavg_before")
    lines = [
        f"# Latency validation: {meta['hw']} on {meta['device']}, batch {meta['batch']}, "
        f"{meta['runtime']}",
        "",
        f"Command: `{command}`",
        "",
        f"{meta['date']}, host {meta['host']}, torch {meta['torch_version']}, "
        f"{meta['threads']} thread(s), space {meta['space']}, seed {meta['seed']}"
        + (
            f", load average (1/5/15 min) {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f} before "
            f"and {meta['loadavg_after'][0]:.2f} after"
            if load
            else ""
        )
        + ".",
        f"Measured: warm-up, {meta['rounds']} interleaved rounds x {meta['repeats']} samples "
        f"(inner loop >= {meta['min_s'] * 1e3:g} ms), clock: {meta.get('clock', '?')}; "
        f"statistic: the {meta.get('statistic', f'{q:g}-quantile')} (first row); the other "
        "rows compare with the median and the lower decile (0.1-quantile) of the same samples. "
        "Predicted: `costmodel.estimate` (fp32).",
        "",
        "| measured as | architectures | Spearman | Kendall | median abs error | within 10% "
        "| within 25% | mean signed error |",
        "|---|---|---|---|---|---|---|---|",
        row(f"{q:g}-quantile", summary),
        *([row("median", median_summary)] if median_summary and q != 0.5 else []),
        *([row("lower decile", decile_summary)] if decile_summary and q != 0.1 else []),
        *(
            [row(f"{q:g}-quantile at calibration speed (x{factor:.3f})", normalized)]
            if normalized
            else []
        ),
        "",
        f"Reference network (timed in every round): {meta['reference_s'] * 1e3:.3f} ms now"
        + (
            f", {meta['reference_s'] * factor * 1e3:.3f} ms when calibrated: the machine runs "
            f"x{factor:.3f} as fast as then; the last row scales measured times by that "
            "factor."
            if factor
            else "; the profile records no reference time for this batch and runtime."
        ),
        "",
        f"![scatter]({png.name})",
        "",
        "| measured ms | median ms | p10-p90 ms | predicted ms | error | MACs | architecture |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in sorted(points, key=lambda p: p.measured_s):
        lines.append(
            f"| {p.measured_s * 1e3:.3f} | {p.measured_median_s * 1e3:.3f} | "
            f"{p.measured_p10_s * 1e3:.3f}-{p.measured_p90_s * 1e3:.3f} | "
            f"{p.predicted_s * 1e3:.3f} | "
            f"{p.rel_error:+.1%} | {p.macs:,} | `{p.arch}` |"
        )
    md.write_text("\n".join(lines) + "\n")
    scatter_plot(
        points,
        f"{meta['hw']} {meta['device']} b{meta['batch']} {meta['runtime']}: "
        f"Spearman {summary.spearman:.3f}, median |err| {summary.median_abs_error:.1%}",
        png,
    )
    return [js, md, png]
