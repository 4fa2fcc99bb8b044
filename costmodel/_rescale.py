"""Bringing a calibrated profile to the machine's speed now by timing a few networks again.

A shared or power-managed machine's speed moves by tens of percent over hours (the 2-core
development VM: x0.7-x1.5 within an afternoon), more than an absolute latency budget
tolerates, and recalibrating takes minutes. Timing a dozen of the calibration networks and the
reference network again takes under a minute.

Two factors explain the change: one for fixed costs (host dispatch and kernel launch, the
profile's ``runtime`` seconds: about half of a small network at batch 1 on a CPU) and one for
throughput (seconds per op and per byte: nearly all of it at batch 32). Networks at batches 1,
8 and 32 carry different shares of the two, which makes them identifiable; a weak prior
pulls them together where the data cannot separate them. Several networks, not one: on the
development VM one network's speed moved by up to 20 % against the others within minutes, so a
single speed probe made the profile worse about as often as better.

The two kinds of kernel need not move alike. On the development VM, within one minute, chains
of BatchNorms, ReLUs, adds and pools ran 1.5-1.6x slower than at calibration at batch 1 while
the conv-heavy reference network ran 1.2x slower; at batch 32 it was the other way round
(1.2x against 1.5x): experiments/results/epyc_rescale/chain_drift_b*.md. So the fixed costs
and the throughput of streaming kernels (``STREAMING_CLASSES``) can have factors of their own,
fitted to the op chains calibration timed (``costmodel._chains``), timed again.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from scipy.optimize import least_squares

from costmodel._calibrate import configure_torch, measure_networks
from costmodel._fit import _mdape
from costmodel._latency import REDUCTION_CLASSES
from costmodel._measure import DEFAULT_CLOCK, Runnable, steady_state_allocator
from costmodel._report import analyze
from costmodel._spec import LayerSpec
from hw_profiles import KERNEL_CLASSES, PARENT_CLASS, HardwareProfile, RuntimeParams

__all__ = [
    "STREAMING_CLASSES",
    "SpeedChange",
    "fit_speed_change",
    "measure_probes",
    "scale_profile",
]

# Weight of log(overhead_factor) - log(throughput_factor) against the log error of each timed
# network: weak, so that networks at two batches decide and one network gives one factor.
PRIOR_WEIGHT = 0.01
FACTOR_BOUNDS = (0.05, 20.0)  # a machine 20x faster or slower than calibrated is another one
# Kernels that stream their input once (no dot products): BatchNorm, activations, element-wise
# ops, pools. The rest (convs, linear) are ``costmodel._latency.REDUCTION_CLASSES``.
STREAMING_CLASSES = tuple(k for k in KERNEL_CLASSES if k not in REDUCTION_CLASSES)


@dataclass(frozen=True)
class SpeedChange:
    """How the machine's speed moved, from networks timed now against the profile's predictions.

    Factors multiply seconds: above 1 the machine is slower now than the profile says.
    """

    overhead_factor: float
    throughput_factor: float
    measured_s: tuple[float, ...]
    predicted_before_s: tuple[float, ...]
    predicted_after_s: tuple[float, ...]
    # Set when streaming kernels were given factors of their own (``STREAMING_CLASSES``);
    # the two above then apply to convs and linear layers.
    streaming_overhead_factor: float | None = None
    streaming_throughput_factor: float | None = None

    @property
    def error_before(self) -> float:
        """Median absolute relative error of the profile on the timed networks."""
        return _mdape(self.predicted_before_s, self.measured_s)

    @property
    def error_after(self) -> float:
        """The same for the scaled profile."""
        return _mdape(self.predicted_after_s, self.measured_s)

    def scale(self, hw: HardwareProfile) -> HardwareProfile:
        """``hw`` scaled by these factors (``scale_profile``)."""
        return scale_profile(
            hw, self.overhead_factor, self.throughput_factor,
            streaming_overhead_factor=self.streaming_overhead_factor,
            streaming_throughput_factor=self.streaming_throughput_factor,
        )  # fmt: skip


def scale_profile(
    hw: HardwareProfile,
    overhead_factor: float,
    throughput_factor: float,
    *,
    streaming_overhead_factor: float | None = None,
    streaming_throughput_factor: float | None = None,
) -> HardwareProfile:
    """``hw`` with every fixed cost times ``overhead_factor`` and every rate divided by
    ``throughput_factor`` (seconds per byte of fresh pages times it).

    With the streaming factors, the layers of ``STREAMING_CLASSES`` take those instead: their
    whole host cost (the per-op one included) times the first, their efficiencies over the
    second. Exact on a CPU, where host and kernel costs add.
    """
    a, c = overhead_factor, throughput_factor
    sa = a if streaming_overhead_factor is None else streaming_overhead_factor
    sc = c if streaming_throughput_factor is None else streaming_throughput_factor
    for field, v in (("overhead_factor", a), ("throughput_factor", c),
                     ("streaming_overhead_factor", sa),
                     ("streaming_throughput_factor", sc)):  # fmt: skip
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{field}={v!r} must be a finite number > 0")
    if (sa, sc) == (a, c):
        return _scale_all(hw, a, c)
    # Shared terms take the smaller factor, each class's own terms make up the rest, so that
    # no efficiency rises above the profile's and no fixed cost turns negative.
    fixed = {k: sa if k in STREAMING_CLASSES else a for k in KERNEL_CLASSES}
    rate = {k: sc if k in STREAMING_CLASSES else c for k in KERNEL_CLASSES}
    scaled = _scale_all(hw, min(a, sa), min(c, sc))
    runtimes = {rt: _class_fixed_costs(hw.runtimes[rt], p, fixed, min(a, sa))
                for rt, p in scaled.runtimes.items()}  # fmt: skip
    return dataclasses.replace(
        scaled,
        runtimes=MappingProxyType(runtimes),
        page_fault_s_per_byte=hw.page_fault_s_per_byte * c,
        **_class_efficiencies(hw, {k: min(c, sc) / r for k, r in rate.items()}),
    )


def _scale_all(hw: HardwareProfile, a: float, c: float) -> HardwareProfile:
    runtimes = {
        rt: RuntimeParams(
            kernel_overhead_s=p.kernel_overhead_s * a,
            host_overhead_s=p.host_overhead_s * a,
            class_host_overhead_s=MappingProxyType(
                {k: v * a for k, v in p.class_host_overhead_s.items()}
            ),
        )
        for rt, p in hw.runtimes.items()
    }
    return dataclasses.replace(
        hw,
        runtimes=MappingProxyType(runtimes),
        bandwidth_bytes_per_s=hw.bandwidth_bytes_per_s / c,
        cache_bandwidth_bytes_per_s=hw.cache_bandwidth_bytes_per_s / c,
        peak_ops_per_s=MappingProxyType({p: v / c for p, v in hw.peak_ops_per_s.items()}),
        page_fault_s_per_byte=hw.page_fault_s_per_byte * c,
    )


def _class_fixed_costs(
    before: RuntimeParams, shared: RuntimeParams, fixed: dict[str, float], least: float
) -> RuntimeParams:
    """``shared`` (per-op costs already times ``least``) with every class's host cost set so
    that its whole fixed cost is ``before``'s times ``fixed[class]``."""
    per_op = before.host_overhead_s + before.kernel_overhead_s
    own = {k: (before.host_s(k) - before.host_overhead_s) * f + per_op * (f - least)
           for k, f in fixed.items()}  # fmt: skip
    return dataclasses.replace(shared, class_host_overhead_s=MappingProxyType(own))


def _class_efficiencies(hw: HardwareProfile, factor: dict[str, float]) -> dict[str, Any]:
    """Every efficiency table of ``hw`` with each class's value times ``factor[class]``, each
    class written out (a class looked up through its parent would otherwise take the parent's
    factor)."""

    def default(table: Mapping[str, float], k: str) -> float:
        return next((table[c] for c in (k, PARENT_CLASS.get(k)) if c in table), 1.0)

    out: dict[str, Any] = {}
    for side, i in (("compute", 0), ("memory", 1)):
        table = getattr(hw, f"{side}_efficiency")
        out[f"{side}_efficiency"] = MappingProxyType(
            {k: default(table, k) * f for k, f in factor.items()}
        )
        out[f"{side}_efficiency_by_precision"] = MappingProxyType({
            p: MappingProxyType({k: hw.efficiency(k, p)[i] * f for k, f in factor.items()})
            for p in getattr(hw, f"{side}_efficiency_by_precision")})  # fmt: skip
    return out


def fit_speed_change(
    hw: HardwareProfile,
    rows: Sequence[tuple[Sequence[LayerSpec], float]],
    *,
    precision: str = "fp32",
    runtime: str = "eager",
    scale: Callable[[HardwareProfile, float, float], HardwareProfile] | None = None,
    streaming: bool = False,
) -> SpeedChange:
    """The factors that bring ``hw``'s predictions to the measured times, in log space.

    ``rows``: (a network's layers at its batch, its seconds per forward pass measured now).
    ``scale``: how two factors change a profile (default ``scale_profile``); another split
    of the machine's speed can be compared with it (experiments/rescale_split_ablation.py).
    ``streaming``: fit streaming kernels' two factors apart from convs' and linear layers'
    (``scale_profile``'s streaming factors); rows should then include op chains.
    """
    if streaming and scale is not None:
        raise ValueError("streaming=True fits scale_profile's four factors; scale must be None")
    scale = scale or scale_profile
    if not rows:
        raise ValueError("rows is empty: at least one timed network is needed")
    bad = [(k, t) for k, (_, t) in enumerate(rows) if not (math.isfinite(t) and t > 0)]
    if bad:
        raise ValueError(f"measured times must be finite and > 0; rows (index, time): {bad}")
    measured = np.array([t for _, t in rows])

    def scaled(f: np.ndarray) -> HardwareProfile:
        if not streaming:
            return scale(hw, *f)
        return scale_profile(hw, f[0], f[1], streaming_overhead_factor=f[2],
                             streaming_throughput_factor=f[3])  # fmt: skip

    def predicted(h: HardwareProfile) -> np.ndarray:
        return np.array(
            [analyze(specs, h, precision, runtime).total.latency_s for specs, _ in rows]
        )

    before = predicted(hw)
    # The weak prior ties each kind's fixed costs to its throughput, and the two kinds together.
    ties = [(0, 1), (2, 3), (0, 2), (1, 3)] if streaming else [(0, 1)]

    def residuals(x: np.ndarray) -> np.ndarray:
        pred = predicted(scaled(np.exp(x)))
        prior = [PRIOR_WEIGHT * (x[i] - x[j]) for i, j in ties]
        return np.append(np.log(pred / measured), prior)

    lo, hi = np.log(FACTOR_BOUNDS)
    start = np.full(4 if streaming else 2,
                    np.clip(np.median(np.log(measured / before)), lo, hi))  # fmt: skip
    f = np.exp(least_squares(residuals, start, bounds=(lo, hi)).x)
    return SpeedChange(
        overhead_factor=float(f[0]),
        throughput_factor=float(f[1]),
        measured_s=tuple(float(t) for t in measured),
        predicted_before_s=tuple(float(t) for t in before),
        predicted_after_s=tuple(float(t) for t in predicted(scaled(f))),
        streaming_overhead_factor=float(f[2]) if streaming else None,
        streaming_throughput_factor=float(f[3]) if streaming else None,
    )


def measure_probes(
    networks: Sequence[Runnable],
    batches: Sequence[int],
    device: str,
    *,
    reference: Runnable | None = None,
    threads: int = 1,
    rounds: int | None = None,
    clock: str = DEFAULT_CLOCK,
) -> tuple[list[tuple[tuple[LayerSpec, ...], float]], dict[int, float]]:
    """(layers, seconds) of each network at batch ``batches[i % len(batches)]``, timed as
    calibration timed it, and the reference network's seconds at each of those batches.

    The allocator is set to the state calibration and validation measure in: without it every
    batch-32 output is freshly mmapped and batch 32 comes out over 1.5x slower.
    """
    configure_torch(device, threads)
    if device == "cpu":
        steady_state_allocator()
    with torch.inference_mode():
        return measure_networks(networks, batches, device, reference, clock, rounds=rounds)
