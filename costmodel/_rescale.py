"""Bringing a calibrated profile to the machine's speed now by timing one network again.

A shared or power-managed machine's speed moves by tens of percent over hours (the 2-core
development VM: x0.7-x1.5 within an afternoon), more than an absolute latency budget
tolerates, and recalibrating takes minutes. Calibration records a fixed reference network's
time per batch (``[calibration] reference_s``); timing it again takes half a minute.

Two factors explain the change: one for fixed costs (host dispatch and kernel launch, the
profile's ``runtime`` seconds: about half of the reference at batch 1 on a CPU) and one for
throughput (seconds per op and per byte: nearly all of it at batch 32). The reference's
fixed-cost share differs between batches, which makes the two identifiable; with a single
batch, or shares too close to separate, a weak prior pulls them together into one factor.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import torch
from scipy.optimize import least_squares

from costmodel._calibrate import configure_torch
from costmodel._measure import (
    DEFAULT_CLOCK,
    Runnable,
    measure_latencies,
    steady_state_allocator,
)
from costmodel._report import analyze
from costmodel._spec import LayerSpec
from hw_profiles import HardwareProfile, RuntimeParams

__all__ = ["SpeedChange", "fit_speed_change", "measure_reference", "scale_profile"]

# Weight of log(overhead_factor) - log(throughput_factor) against the log error of each
# batch's reference ratio: weak, so that two batches decide and one batch gives one factor.
PRIOR_WEIGHT = 0.01
FACTOR_BOUNDS = (0.05, 20.0)  # a machine 20x faster or slower than calibrated is another one


@dataclass(frozen=True)
class SpeedChange:
    """How the machine's speed moved since the profile's reference timings.

    Factors multiply seconds: above 1 the machine is slower now.
    """

    overhead_factor: float
    throughput_factor: float
    reference_then_s: Mapping[int, float]
    reference_now_s: Mapping[int, float]
    # The reference's predicted time now over then under the two factors, per batch.
    fitted_ratio: Mapping[int, float]

    def measured_ratio(self, batch: int) -> float:
        return self.reference_now_s[batch] / self.reference_then_s[batch]


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
    reference_layers: Mapping[int, Sequence[LayerSpec]],
    then_s: Mapping[int, float],
    now_s: Mapping[int, float],
    *,
    precision: str = "fp32",
    runtime: str = "eager",
) -> SpeedChange:
    """The two factors that move the reference's predicted time by its measured ratio.

    ``reference_layers``: the reference network lowered at each batch; ``then_s``: its
    times when ``hw`` was calibrated; ``now_s``: its times now. Only the ratio of now to
    then is fitted, so the profile keeps whatever it predicted for the reference before.
    """
    batches = sorted(set(then_s) & set(now_s) & set(reference_layers))
    if not batches:
        raise ValueError(
            f"no batch has both a calibrated ({sorted(then_s)}) and a current "
            f"({sorted(now_s)}) reference time"
        )
    for label, times in (("then_s", then_s), ("now_s", now_s)):
        bad = {b: times[b] for b in batches if not (math.isfinite(times[b]) and times[b] > 0)}
        if bad:
            raise ValueError(f"{label}={bad} must be finite times > 0")

    def predicted(h: HardwareProfile) -> np.ndarray:
        return np.array(
            [analyze(reference_layers[b], h, precision, runtime).total.latency_s for b in batches]
        )

    before = predicted(hw)
    target = np.log([now_s[b] / then_s[b] for b in batches])

    def residuals(x: np.ndarray) -> np.ndarray:
        ratio = predicted(scale_profile(hw, *np.exp(x))) / before
        return np.append(np.log(ratio) - target, PRIOR_WEIGHT * (x[0] - x[1]))

    lo, hi = np.log(FACTOR_BOUNDS)
    start = np.full(2, np.clip(target.mean(), lo, hi))
    solution = least_squares(residuals, start, bounds=(lo, hi)).x
    a, c = (float(v) for v in np.exp(solution))
    fitted = predicted(scale_profile(hw, a, c)) / before
    return SpeedChange(
        overhead_factor=a,
        throughput_factor=c,
        reference_then_s=MappingProxyType({b: float(then_s[b]) for b in batches}),
        reference_now_s=MappingProxyType({b: float(now_s[b]) for b in batches}),
        fitted_ratio=MappingProxyType({b: float(r) for b, r in zip(batches, fitted, strict=True)}),
    )


def measure_reference(
    reference: Runnable,
    batches: Sequence[int],
    device: str,
    *,
    fillers: Sequence[Runnable] = (),
    threads: int = 1,
    rounds: int | None = None,
    clock: str = DEFAULT_CLOCK,
) -> dict[int, float]:
    """Seconds per forward pass of ``reference`` at each batch, timed as calibration timed it.

    Calibration timed the reference in rounds among other networks, which leave the caches
    cold for it; ``fillers`` (a few of the calibration networks) recreate that. The allocator
    is set to the state calibration and validation measure in: without it every batch-32
    output is freshly mmapped and the reference comes out over 1.5x slower.
    """
    configure_torch(device, threads)
    if device == "cpu":
        steady_state_allocator()
    out: dict[int, float] = {}
    with torch.inference_mode():
        for b in sorted(set(batches)):
            times = measure_latencies([*fillers, reference], b, device, rounds=rounds, clock=clock)
            out[b] = times[-1]
    return out
