"""Roofline latency (Williams, Waterman, Patterson, CACM 2009) with fixed costs.

A kernel takes at least max(ops / attainable peak, bytes / attainable
bandwidth); to that we add the runtime's fixed per-kernel cost. The attainable
figures are the profile's datasheet peaks times its per-kernel-class
efficiency (PALEO's "platform percent of peak"); a profile without efficiency
tables gives the bare roofline.

Host cost per op call (framework dispatch) adds to the kernel on a CPU, where
one thread does both. On an accelerator the host enqueues kernels
asynchronously, so the network takes the critical path of a two-stage
pipeline: kernel i starts when the host has issued it and kernel i-1 ended.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from costmodel._formulas import Counts
from costmodel._kinds import kernel_class
from costmodel._spec import LayerSpec
from costmodel._units import BITS_PER_ELEMENT, macs_to_flops
from hw_profiles import HardwareProfile

COMPUTE, MEMORY, OVERHEAD, FREE = "compute", "memory", "overhead", "free"


@dataclass(frozen=True, slots=True)
class KernelTime:
    compute_s: float  # roofline compute time at attainable peak
    memory_s: float  # roofline memory time at attainable bandwidth
    overhead_s: float  # fixed device-side cost per kernel
    host_s: float  # host-side cost of issuing the op
    device_s: float  # max(compute, memory) + overhead
    bound: str  # compute | memory | overhead | free


class LatencyModel(Protocol):
    """Per-layer kernel times for a network; swap it to change how latency is predicted."""

    def kernel_times(
        self,
        layers: list[tuple[LayerSpec, Counts, int]],  # (spec, counts, mac_bytes)
        hw: HardwareProfile,
        precision: str,
        runtime: str,
    ) -> list[KernelTime]: ...


_FREE = KernelTime(0.0, 0.0, 0.0, 0.0, 0.0, FREE)


def roofline_time(
    spec: LayerSpec, counts: Counts, mac_bytes: int, hw: HardwareProfile, precision: str, runtime: str
) -> KernelTime:
    if counts.alias:
        return _FREE
    ce, me = hw.efficiency(kernel_class(spec), precision)
    ops = macs_to_flops(counts.macs) + counts.other_ops
    compute_s = ops / (hw.peak(precision) * ce)
    memory_s = mac_bytes / (hw.bandwidth_bytes_per_s * me)
    rt = hw.runtime(runtime)
    overhead_s = rt.kernel_overhead_s
    host_s = rt.host_overhead_s
    if hw.device_type == "cpu":  # one thread dispatches and computes
        overhead_s, host_s = overhead_s + host_s, 0.0
    roof = max(compute_s, memory_s)
    if overhead_s > roof:
        bound = OVERHEAD
    else:
        bound = COMPUTE if compute_s >= memory_s else MEMORY
    return KernelTime(compute_s, memory_s, overhead_s, host_s, roof + overhead_s, bound)


class RooflineModel:
    """The interpretable prior: roofline per kernel plus the runtime's fixed costs."""

    def kernel_times(
        self,
        layers: list[tuple[LayerSpec, Counts, int]],
        hw: HardwareProfile,
        precision: str,
        runtime: str,
    ) -> list[KernelTime]:
        return [roofline_time(s, c, b, hw, precision, runtime) for s, c, b in layers]


def critical_path(times: list[KernelTime]) -> list[float]:
    """Each layer's share of network latency when the host issues kernels ahead.

    host_t: when the host has issued kernel i; dev_t: when kernel i ends.
    The returned increments sum to the network latency.
    """
    host_t = dev_t = 0.0
    shares = []
    for t in times:
        if t.bound == FREE:
            shares.append(0.0)
            continue
        host_t += t.host_s
        end = max(host_t, dev_t) + t.device_s
        shares.append(end - dev_t)
        dev_t = end
    return shares


def bits(precision: str) -> int:
    return BITS_PER_ELEMENT[precision]
