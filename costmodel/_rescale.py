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
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import torch
from scipy.optimize import least_squares

from costmodel._calibrate import configure_torch, measure_networks
from costmodel._fit import _mdape
from costmodel._measure import DEFAULT_CLOCK, Runnable, steady_state_allocator
from costmodel._report import analyze
from costmodel._spec import LayerSpec
from hw_profiles import HardwareProfile, RuntimeParams

__all__ = ["SpeedChange", "fit_speed_change", "measure_probes", "scale_profile"]

# Weight of log(overhead_factor) - log(throughput_factor) against the log error of each timed
# network: weak, so that networks at two batches decide and one network gives one factor.
PRIOR_WEIGHT = 0.01
FACTOR_BOUNDS = (0.05, 20.0)  # a machine 20x faster or slower than calibrated is another one


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

    @property
    def error_before(self) -> float:
        """Median absolute relative error of the profile on the timed networks."""
        return _mdape(self.predicted_before_s, self.measured_s)

    @property
    def error_after(self) -> float:
        """The same for the scaled profile."""
        return _mdape(self.predicted_after_s, self.measured_s)


def scale_profile(
    hw: HardwareProfile, overhead_factor: float, throughput_factor: float
) -> HardwareProfile:
    """``hw`` with every fixed cost times ``overhead_factor`` and every rate divided by
    ``throughput_factor`` (seconds per byte of fresh pages times it)."""
    for field, v in (("overhead_factor", overhead_factor),
                     ("throughput_factor", throughput_factor)):  # fmt: skip
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{field}={v!r} must be a finite number > 0")
    a, c = overhead_factor, throughput_factor
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


def fit_speed_change(
    hw: HardwareProfile,
    rows: Sequence[tuple[Sequence[LayerSpec], float]],
    *,
    precision: str = "fp32",
    runtime: str = "eager",
    scale: Callable[[HardwareProfile, float, float], HardwareProfile] | None = None,
) -> SpeedChange:
    """The two factors that bring ``hw``'s predictions to the measured times, in log space.

    ``rows``: (a network's layers at its batch, its seconds per forward pass measured now).
    ``scale``: how two factors change a profile (default ``scale_profile``); another split
    of the machine's speed can be compared with it (experiments/rescale_split_ablation.py).
    """
    scale = scale or scale_profile
    if not rows:
        raise ValueError("rows is empty: at least one timed network is needed")
    bad = [(k, t) for k, (_, t) in enumerate(rows) if not (math.isfinite(t) and t > 0)]
    if bad:
        raise ValueError(f"measured times must be finite and > 0; rows (index, time): {bad}")
    measured = np.array([t for _, t in rows])

    def predicted(h: HardwareProfile) -> np.ndarray:
        return np.array(
            [analyze(specs, h, precision, runtime).total.latency_s for specs, _ in rows]
        )

    before = predicted(hw)

    def residuals(x: np.ndarray) -> np.ndarray:
        pred = predicted(scale(hw, *np.exp(x)))
        return np.append(np.log(pred / measured), PRIOR_WEIGHT * (x[0] - x[1]))

    lo, hi = np.log(FACTOR_BOUNDS)
    start = np.full(2, np.clip(np.median(np.log(measured / before)), lo, hi))
    a, c = (float(v) for v in np.exp(least_squares(residuals, start, bounds=(lo, hi)).x))
    return SpeedChange(
        overhead_factor=a,
        throughput_factor=c,
        measured_s=tuple(float(t) for t in measured),
        predicted_before_s=tuple(float(t) for t in before),
        predicted_after_s=tuple(float(t) for t in predicted(scale(hw, a, c))),
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
