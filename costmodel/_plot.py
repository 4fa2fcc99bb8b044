"""Roofline charts (Williams, Waterman, Patterson, CACM 2009) of layers and networks.

x: arithmetic intensity in ops per byte moved (``LayerCost.intensity``: FLOPs plus
other ops over memory access bytes); y: attained ops per second, that is the same
ops over the predicted latency. The roof is the profile's datasheet figure for
the precision: min(peak, intensity * bandwidth). Points sit below it by the
kernel efficiencies and per-kernel overheads of the latency model.

The roof alone hides the runtime's fixed cost per kernel: a layer whose latency is that
fixed cost (overhead-bound) sits low whatever its intensity. Such points are drawn hollow,
and the legend states the runtime's per-kernel cost, so a chart full of hollow points reads
"this setting counts kernels", not "these layers are slow at their intensity".

Drawing uses matplotlib's Agg canvas directly, so the process-wide backend is
left alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from costmodel._latency import OVERHEAD
from costmodel._report import CostReport
from costmodel._units import check_precision
from hw_profiles import HardwareProfile, load

__all__ = ["plot_roofline_layers", "plot_roofline_networks", "roofline_points"]

# One colour per kernel class, stable across charts (tab10 order).
_CLASS_COLOURS = {
    "dense_conv": "tab:blue",
    "pointwise_conv": "tab:orange",
    "group_conv": "tab:green",
    "depthwise_conv": "tab:red",
    "linear": "tab:purple",
    "batchnorm": "tab:brown",
    "activation": "tab:pink",
    "elementwise": "tab:gray",
    "pooling": "tab:olive",
    "max_pooling": "gold",
    "global_pooling": "tab:cyan",
}


# Networks annotated with their labels at most: more labels only overlap.
MAX_LABELS = 6


class RooflinePoint(NamedTuple):
    label: str
    kernel_class: str
    intensity: float  # ops per byte
    attained_ops_per_s: float
    overhead_bound: bool = False  # its time is mostly the runtime's fixed per-kernel cost


def roofline_points(report: CostReport) -> list[RooflinePoint]:
    """One point per costed layer; views (no kernel, zero latency) are left out."""
    points = []
    for layer in report.layers:
        if layer.latency_s <= 0 or layer.mac_bytes <= 0:
            continue
        ops = layer.flops + layer.other_ops
        points.append(
            RooflinePoint(
                layer.name,
                layer.kernel_class,
                layer.intensity,
                ops / layer.latency_s,
                layer.bound == OVERHEAD,
            )
        )
    return points


def overhead_share(report: CostReport) -> float:
    """The overhead-bound layers' share of the summed layer time (0 when nothing is costed)."""
    total = sum(ly.latency_s for ly in report.layers)
    over = sum(ly.latency_s for ly in report.layers if ly.bound == OVERHEAD)
    return over / total if total > 0 else 0.0


def _network_point(report: CostReport, label: str) -> RooflinePoint:
    t = report.total
    if t.latency_s <= 0 or t.mac_bytes <= 0:
        raise ValueError(
            f"network {label!r} has latency_s={t.latency_s} and "
            f"mac_bytes={t.mac_bytes}; nothing to place on a roofline"
        )
    return RooflinePoint(
        label,
        "network",
        t.intensity,
        (t.flops + t.other_ops) / t.latency_s,
        overhead_share(report) > 0.5,
    )


def _draw_roof(ax: Axes, hw_profile: HardwareProfile, precision: str, xs: Sequence[float]) -> None:
    peak, bw = hw_profile.peak(precision), hw_profile.bandwidth_bytes_per_s
    ridge = peak / bw
    lo = min([*xs, ridge]) / 10
    hi = max([*xs, ridge]) * 10
    roof = f"datasheet roofline: {peak / 1e12:g} Tops/s {precision}, {bw / 1e9:g} GB/s"
    ax.plot([lo, ridge, hi], [lo * bw, peak, peak], color="black", linewidth=1.5, label=roof)
    ax.axvline(ridge, color="black", linestyle=":", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity: (FLOPs + other ops) / MAC bytes")
    ax.set_ylabel("attained ops per second (ops / predicted latency)")
    ax.grid(True, which="both", linewidth=0.3)


def _overhead_label(hw_profile: HardwareProfile, runtime: str, n: int, what: str) -> str:
    k = hw_profile.runtime(runtime).kernel_overhead_s
    return f"hollow: {n} {what} overhead-bound ({runtime}: {k * 1e6:g} us fixed per kernel)"


def _scatter(
    ax: Axes, points: Sequence[RooflinePoint], colour: str, label: str, **kw: object
) -> None:
    """Filled points, and hollow ones (same colour edge) for the overhead-bound."""
    for hollow in (False, True):
        mine = [p for p in points if p.overhead_bound == hollow]
        if mine:
            ax.scatter(
                [p.intensity for p in mine],
                [p.attained_ops_per_s for p in mine],
                facecolors="none" if hollow else colour,
                edgecolors=colour,
                label=None if hollow and len(mine) < len(points) else label,
                **kw,
            )  # type: ignore[arg-type]


def _legend_below(ax: Axes) -> None:
    """The legend under the axes: it never covers points."""
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.12), ncol=2, frameon=False)


def _label_spread(points: Sequence[RooflinePoint], k: int) -> list[RooflinePoint]:
    """Up to ``k`` points spread along the intensity axis: labels that do not pile up."""
    by_x = sorted(points, key=lambda p: p.intensity)
    if len(by_x) <= k:
        return by_x
    return [by_x[round(i * (len(by_x) - 1) / (k - 1))] for i in range(k)]


def _save(fig: Figure, path: str | Path) -> Path:
    out = Path(path)
    if out.parent and not out.parent.exists():
        raise FileNotFoundError(
            f"cannot write the plot: directory {str(out.parent)!r} does not exist"
        )
    FigureCanvasAgg(fig)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    return out


def plot_roofline_layers(
    report: CostReport, hw: str | Path | HardwareProfile, path: str | Path, title: str | None = None
) -> Path:
    """Draw each layer of ``report`` on ``hw``'s roofline at the report's precision.

    ``hw`` should be the profile the report was computed for. Returns the path written.
    """
    hw_profile = load(hw)
    points = roofline_points(report)
    fig = Figure(figsize=(8, 5.5))
    ax = fig.add_subplot()
    _draw_roof(ax, hw_profile, report.precision, [p.intensity for p in points] or [1.0])
    for cls, colour in _CLASS_COLOURS.items():
        mine = [p for p in points if p.kernel_class == cls]
        if mine:
            _scatter(ax, mine, colour, cls, s=18, alpha=0.8)
    n_over = sum(p.overhead_bound for p in points)
    if n_over:
        ax.scatter(
            [],
            [],
            s=18,
            facecolors="none",
            edgecolors="black",
            label=_overhead_label(hw_profile, report.runtime, n_over, "layers"),
        )
    ax.set_title(
        title
        or f"{len(points)} layers on {hw_profile.name} ({report.precision}, "
        f"{report.runtime}, batch {report.batch})"
    )
    _legend_below(ax)
    return _save(fig, path)


def plot_roofline_networks(
    reports: Sequence[CostReport],
    labels: Sequence[str],
    hw: str | Path | HardwareProfile,
    precision: str,
    path: str | Path,
    title: str | None = None,
    highlight: Sequence[int] | None = None,
) -> Path:
    """One point per network (total ops / total latency vs total intensity).

    ``highlight``: indices of networks to mark and label (e.g. the Pareto front).
    """
    if len(reports) != len(labels):
        raise ValueError(f"got {len(reports)=} but {len(labels)=}; one label per report")
    if not reports:
        raise ValueError("reports is empty: nothing to plot")
    check_precision(precision)
    other = sorted({r.precision for r in reports} - {precision})
    if other:
        raise ValueError(f"precision={precision!r} but some reports were costed at {other}")
    hw_profile = load(hw)
    marked = set(highlight or ())
    bad = sorted(i for i in marked if not 0 <= i < len(reports))
    if bad:
        raise ValueError(f"highlight={bad} are not indices into {len(reports)} reports")
    points = [_network_point(r, lab) for r, lab in zip(reports, labels, strict=True)]
    fig = Figure(figsize=(8, 5.5))
    ax = fig.add_subplot()
    _draw_roof(ax, hw_profile, precision, [p.intensity for p in points])
    rest = [p for i, p in enumerate(points) if i not in marked]
    _scatter(ax, rest, "tab:blue", "networks", s=16, alpha=0.5)
    if marked:
        top = [points[i] for i in sorted(marked)]
        shown = _label_spread(top, MAX_LABELS)
        note = "" if len(shown) == len(top) else f", {len(shown)} labelled"
        _scatter(ax, top, "tab:red", f"highlighted ({len(top)}{note})", s=40, linewidths=1.0)
        for n, p in enumerate(shown):  # alternate above / below: neighbours do not collide
            ax.annotate(
                p.label,
                (p.intensity, p.attained_ops_per_s),
                fontsize=6,
                xytext=(6, 8) if n % 2 == 0 else (6, -12),
                textcoords="offset points",
                arrowprops={"arrowstyle": "-", "linewidth": 0.4},
            )
    n_over = sum(p.overhead_bound for p in points)
    if n_over:
        runtimes = sorted({r.runtime for r in reports})
        ax.scatter(
            [],
            [],
            s=16,
            facecolors="none",
            edgecolors="black",
            label=_overhead_label(hw_profile, runtimes[0], n_over, "networks"),
        )
    ax.set_title(title or f"{len(points)} networks on {hw_profile.name} ({precision})")
    _legend_below(ax)
    return _save(fig, path)
