"""Roofline latency (Williams, Waterman, Patterson, CACM 2009) with documented corrections.

The prior: a kernel takes at least max(ops / attainable peak, bytes / attainable
bandwidth). Every correction below is a named profile parameter (TOML data,
hw_profiles/_schema.py), each one switched off by its default, so a datasheet
profile without them is the bare roofline plus fixed costs:

1. Fixed costs per runtime ("eager" / "graph" / "fused"): a device-side cost
   per kernel and a host-side cost per op call, plus a per-kernel-class host
   extra (``class_host_overhead_s``: a CPU conv picks and sets up an algorithm,
   a ReLU does not). Measured with PyTorch 2.11 on a Hopper-class GPU: ~11 us
   per tiny kernel launched eagerly from Python, ~1 us replayed from a CUDA graph.
   Whole networks in eager PyTorch (HELP's GPU tables, fitted by
   costmodel._fit.fit_networks) give ~19-26 us per call plus ~36-73 us for a
   conv / linear call (cuDNN descriptor and algorithm set-up), ~3.3 us device.
2. Fusion ("fused" runtime, as TensorRT / TFLite / oneDNN post-ops; nn-Meter,
   Zhang et al., MobiSys 2021): batch norm and activations run as the epilogue
   of the kernel that produced their input; their intermediate tensors never
   reach memory and they launch nothing. Decided from the layer and its
   producer's name only (``LayerSpec.inputs``), so it stays block-local.
3. Host/device overlap on accelerators: the host enqueues kernels
   asynchronously (``critical_path``); on a CPU one thread does both and the
   host cost adds to the kernel.
4. Efficiency per kernel class and precision, for compute and memory
   (PALEO's "platform percent of peak", Qi et al., ICLR 2017), times shape
   factors on the compute side. The class is the algorithm the runtime picks
   where a profile models that choice (``conv_dispatch``; PyTorch on a CPU
   runs small single-image convs natively instead of with oneDNN, at a
   different fixed cost: costmodel/_kinds.py):
   - parallel work: W / (W + W_half), W = output elements
     (``saturation_output_elements``): a small output cannot fill the device;
   - wave quantisation: W / (ceil(W / wave) * wave) (``wave_output_elements``);
   - reduction length: K / (K + K_half), K = MACs per output element, conv and
     linear only (``saturation_reduction_elements``): short dot products
     (depthwise, tiny cin) do not amortise loads;
   - output channels per group: N / (N + N_half), conv (not depthwise) and
     linear (``saturation_output_channels``): a GEMM with a narrow N side
     (a group conv of few channels per group) reuses each input load little;
   - tensor-core alignment: channels per group not a multiple of 8 at fp16 /
     bf16 / int8 / int4 (``unaligned_channels_efficiency``; NVIDIA's
     "Deep Learning Performance" guide asks for multiples of 8);
   - SIMD lane use on a CPU (``simd_lanes``): oneDNN blocks channels by the
     vector width, so a conv with c input channels per group fills
     c / (ceil(c / lanes) * lanes) of each vector, likewise for its output
     channels: a group conv of 4 channels per group at 8 lanes runs at 1/4
     (measured on the development VM: 3.5-4.3 GFLOPS against 16-19 at 8 per
     group).
5. Cache: a kernel whose whole working set (mac bytes) fits in ``cache_bytes``
   streams at ``cache_bandwidth_bytes_per_s`` instead of DRAM bandwidth; with
   ``cache_falloff_exponent`` > 0 the cache's share falls smoothly with the
   working set (a CPU's effective share of a shared last-level cache is fitted).
   ``cache_model = "ceilings"`` makes the cache and DRAM two ceilings instead of one
   blended bandwidth (``memory_time_s``).
6. Fresh memory (CPU): PyTorch's CPU allocator has no cache, and a tensor on
   pages the OS has just handed out faults on every page it writes
   (``page_fault_s_per_byte``; 0.8 ns/B, 3.2 us per 4 KiB page on the
   development VM): a 48 MiB activation costs ~40 ms of kernel time, more than
   its arithmetic. Which bytes are fresh is a property of the whole network
   (tensors above ``mmap_threshold_bytes`` are mapped anew on every call,
   smaller ones when glibc has trimmed its heap): costmodel._allocator
   simulates it, and ``RooflineModel.kernel_times`` charges each layer for its
   own.
7. Overlap of compute and memory (``memory_compute_overlap``, 1 = the
   roofline's max): time = max(c, m) + (1 - overlap) * min(c, m). A single
   CPU thread hides little of its memory traffic under its arithmetic
   (ShuffleNet V2's G1: at equal MACs the layer with more memory access is
   slower even when compute-bound).

Every factor only ever lowers an efficiency or raises a bandwidth when the
corresponding hardware figure rises, so latency never rises when peak or
bandwidth rise (tests/test_latency.py checks it with Hypothesis).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from costmodel import _allocator as allocator
from costmodel import _spec as S
from costmodel._formulas import Counts
from costmodel._kinds import latency_class
from costmodel._spec import NETWORK_INPUT, LayerSpec
from costmodel._units import macs_to_flops
from hw_profiles import HardwareProfile

COMPUTE, MEMORY, OVERHEAD, FREE, FUSED = "compute", "memory", "overhead", "free", "fused"

# Ops a fused runtime runs as the epilogue of their producer's kernel.
EPILOGUE_OPS = frozenset({S.BATCHNORM2D, *S.ACTIVATIONS})
# Classes whose compute is a reduction (dot products) over K = MACs per output.
REDUCTION_CLASSES = frozenset(
    {"dense_conv", "pointwise_conv", "group_conv", "depthwise_conv", "linear", "native_conv"}
)
# Classes that are GEMMs with N = output channels per group.
GEMM_CLASSES = REDUCTION_CLASSES - {"depthwise_conv"}
# Classes that run on tensor cores at low precision and want aligned channels.
TENSOR_CORE_CLASSES = frozenset(
    {"dense_conv", "pointwise_conv", "group_conv", "linear", "native_conv"}
)
TENSOR_CORE_PRECISIONS = frozenset({"fp16", "bf16", "int8", "int4"})
ALIGN_CHANNELS = 8


@dataclass(frozen=True, slots=True)
class KernelTime:
    compute_s: float  # roofline compute time at attainable (shape-corrected) peak
    memory_s: float  # roofline memory time at attainable bandwidth
    overhead_s: float  # fixed cost per kernel (on a CPU: host dispatch included)
    host_s: float  # host-side cost of issuing the op (accelerators: overlaps)
    device_s: float  # max(compute, memory) + overhead
    bound: str  # compute | memory | overhead | free (a view) | fused (an epilogue)


class LatencyModel(Protocol):
    """Per-layer kernel times for a network; swap it to change how latency is predicted.

    A model may also define ``whole_network(hw) -> bool``: True where a layer's time
    depends on the layers around it, so ``estimate`` must cost whole networks rather
    than cached segments (``RooflineModel``: a CPU profile with a fresh-page cost).
    """

    def kernel_times(
        self,
        layers: list[tuple[LayerSpec, Counts, int]],  # (spec, counts, mac_bytes)
        hw: HardwareProfile,
        precision: str,
        runtime: str,
    ) -> list[KernelTime]: ...


_FREE = KernelTime(0.0, 0.0, 0.0, 0.0, 0.0, FREE)
_FUSED = KernelTime(0.0, 0.0, 0.0, 0.0, 0.0, FUSED)


def is_fused(spec: LayerSpec, runtime: str, follows_layer: bool) -> bool:
    """Whether a fused runtime runs ``spec`` as the epilogue of its producer's kernel.

    Batch norm and activations fuse into whatever kernel produced their input
    (conv + BN + ReLU, add + ReLU, ...); only one reading the network input
    itself has no kernel to join. ``follows_layer`` is used for a layer without
    ``inputs`` (a chain): whether a layer precedes it.
    """
    if runtime != "fused" or spec.op not in EPILOGUE_OPS:
        return False
    if spec.inputs:
        return spec.inputs[0] != NETWORK_INPUT
    return follows_layer


def _per_group(spec: LayerSpec) -> tuple[int, int]:
    """(input, output) channels per group of a conv or linear layer."""
    g = spec.groups if spec.op == S.CONV2D else 1
    return spec.in_channels // g, spec.out_channels // g


def _aligned(spec: LayerSpec) -> bool:
    return all(c % ALIGN_CHANNELS == 0 for c in _per_group(spec))


def _fill(n: float, unit: float) -> float:
    """Share of whole units that ``n`` fills, n / (ceil(n / unit) * unit): waves, SIMD lanes."""
    return n / (math.ceil(n / unit) * unit)


def compute_efficiency(
    spec: LayerSpec, counts: Counts, hw: HardwareProfile, precision: str, cls: str
) -> float:
    """Fraction of peak compute this kernel reaches: class efficiency x shape factors."""
    eff, _ = hw.efficiency(cls, precision)
    work = max(counts.output_elements, 1)
    if hw.wave_output_elements > 0:
        eff *= _fill(work, hw.wave_output_elements)
    if hw.saturation_output_elements > 0:
        eff *= work / (work + hw.saturation_output_elements)
    if cls in REDUCTION_CLASSES and hw.saturation_reduction_elements > 0:
        k = counts.macs / work
        eff *= k / (k + hw.saturation_reduction_elements)
    if cls in GEMM_CLASSES and hw.saturation_output_channels > 0:
        n = _per_group(spec)[1]
        eff *= n / (n + hw.saturation_output_channels)
    if cls in GEMM_CLASSES and hw.simd_lanes > 0:
        cin, cout = _per_group(spec)
        eff *= _fill(cin, hw.simd_lanes) * _fill(cout, hw.simd_lanes)
    if cls in TENSOR_CORE_CLASSES and precision in TENSOR_CORE_PRECISIONS and not _aligned(spec):
        eff *= hw.unaligned_channels_efficiency
    return eff


def memory_bandwidth(mac_bytes: int, hw: HardwareProfile) -> float:
    """DRAM bandwidth, or the cache's when the kernel's working set fits in it.

    With ``cache_falloff_exponent`` p > 0 the share of traffic served by the
    cache falls smoothly, h = 1 / (1 + (bytes / cache_bytes)^p), and the
    bandwidth is the harmonic blend 1 / (h / cache_bw + (1 - h) / dram_bw).
    """
    bw = hw.bandwidth_bytes_per_s
    if hw.cache_bandwidth_bytes_per_s <= 0 or hw.cache_bytes <= 0:
        return bw
    hit = cache_hit_share(mac_bytes, hw)
    return 1.0 / (hit / max(bw, hw.cache_bandwidth_bytes_per_s) + (1.0 - hit) / bw)


def cache_hit_share(mac_bytes: int, hw: HardwareProfile) -> float:
    """The share of a kernel's traffic its profile's cache serves (0 without a cache)."""
    if hw.cache_bandwidth_bytes_per_s <= 0 or hw.cache_bytes <= 0:
        return 0.0
    p = hw.cache_falloff_exponent
    if p <= 0:
        return 1.0 if mac_bytes <= hw.cache_bytes else 0.0
    return 1.0 / (1.0 + (mac_bytes / hw.cache_bytes) ** p)


def memory_time_s(mac_bytes: int, memory_efficiency: float, hw: HardwareProfile) -> float:
    """Seconds to move ``mac_bytes`` at the class's ``memory_efficiency``.

    ``cache_model = "blend"``: at that fraction of ``memory_bandwidth``. ``"ceilings"``
    (a hierarchical roofline; Ilic, Pratas, Sousa, "Cache-aware Roofline model", IEEE
    CAL 2014): the kernel streams at that fraction of the cache bandwidth, and the
    traffic the cache misses can move no faster than DRAM. A kernel far below the
    cache's rate (a pooling window looped one output at a time) then takes as long
    on a working set past the cache as inside it, where the blend slows it by the
    whole cache / DRAM ratio.
    """
    if hw.cache_model == "blend" or hw.cache_bandwidth_bytes_per_s <= 0 or hw.cache_bytes <= 0:
        return mac_bytes / (memory_bandwidth(mac_bytes, hw) * memory_efficiency)
    cache_bw = max(hw.bandwidth_bytes_per_s, hw.cache_bandwidth_bytes_per_s)
    miss = 1.0 - cache_hit_share(mac_bytes, hw)
    return max(
        mac_bytes / (cache_bw * memory_efficiency), miss * mac_bytes / hw.bandwidth_bytes_per_s
    )


def roofline_time(
    spec: LayerSpec,
    counts: Counts,
    mac_bytes: int,
    hw: HardwareProfile,
    precision: str,
    runtime: str,
    *,
    fused: bool = False,
    fresh: allocator.Fresh | None = None,
) -> KernelTime:
    """One kernel's time. ``fresh``: what it writes on fresh pages per call
    (costmodel._allocator); None costs the layer as if it ran alone, call after call."""
    if counts.alias:
        return _FREE
    if fused:
        return _FUSED
    cls = latency_class(spec, hw.conv_dispatch, hw.threads)
    _, me = hw.efficiency(cls, precision)
    ops = macs_to_flops(counts.macs) + counts.other_ops
    compute_s = ops / (hw.peak(precision) * compute_efficiency(spec, counts, hw, precision, cls))
    memory_s = memory_time_s(mac_bytes, me, hw)
    rt = hw.runtime(runtime)
    overhead_s = rt.kernel_overhead_s
    host_s = rt.host_s(cls)
    if hw.page_fault_s_per_byte > 0:
        if fresh is None:
            fresh = allocator.fresh_bytes([spec], [counts], hw, precision)[0]
        overhead_s += fault_s(fresh, hw)
    if hw.device_type == "cpu":  # one thread dispatches and computes
        overhead_s, host_s = overhead_s + host_s, 0.0
    # Roofline max, plus the part of the shorter phase that does not overlap the longer.
    roof = max(compute_s, memory_s) + (1.0 - hw.memory_compute_overlap) * min(compute_s, memory_s)
    if overhead_s > roof:
        bound = OVERHEAD
    else:
        bound = COMPUTE if compute_s >= memory_s else MEMORY
    return KernelTime(compute_s, memory_s, overhead_s, host_s, roof + overhead_s, bound)


class RooflineModel:
    """The interpretable prior: roofline per kernel, fixed costs, fusion and shape factors."""

    def kernel_times(
        self,
        layers: list[tuple[LayerSpec, Counts, int]],
        hw: HardwareProfile,
        precision: str,
        runtime: str,
    ) -> list[KernelTime]:
        fused = [is_fused(s, runtime, i > 0) for i, (s, _, _) in enumerate(layers)]
        fresh = network_fresh_bytes(layers, hw, precision, fused)
        return [
            roofline_time(s, c, b, hw, precision, runtime, fused=u, fresh=f)
            for (s, c, b), u, f in zip(layers, fused, fresh, strict=True)
        ]

    def whole_network(self, hw: HardwareProfile) -> bool:
        """Whether a layer's time on ``hw`` depends on the layers around it (fresh pages)."""
        return needs_allocator(hw)


def fault_s(fresh: allocator.Fresh, hw: HardwareProfile) -> float:
    """Seconds of page faults on the bytes a kernel writes on fresh pages."""
    return fresh.total * hw.page_fault_s_per_byte


def needs_allocator(hw: HardwareProfile) -> bool:
    return hw.page_fault_s_per_byte > 0 and hw.mmap_threshold_bytes > 0


def network_fresh_bytes(
    layers: list[tuple[LayerSpec, Counts, int]],
    hw: HardwareProfile,
    precision: str,
    fused: list[bool] | None = None,
) -> list[allocator.Fresh]:
    """Per layer, the bytes it writes on fresh pages when the layers run as one network.

    ``fused``: layers that run as their producer's epilogue and write no tensor.
    """
    if not needs_allocator(hw):
        return [allocator.NONE] * len(layers)
    return allocator.fresh_bytes(
        [s for s, _, _ in layers], [c for _, c, _ in layers], hw, precision, fused
    )


def critical_path(times: list[KernelTime]) -> list[float]:
    """Each layer's share of network latency when the host issues kernels ahead.

    host_t: when the host has issued kernel i; dev_t: when kernel i ends.
    The returned increments sum to the network latency, which lies between
    max(sum host, sum device) and their sum. On a CPU host_s is 0 and this is
    the plain sum of device times. Views and fused epilogues issue nothing.
    """
    host_t = dev_t = 0.0
    shares = []
    for t in times:
        if t.bound in (FREE, FUSED):
            shares.append(0.0)
            continue
        host_t += t.host_s
        end = max(host_t, dev_t) + t.device_s
        shares.append(end - dev_t)
        dev_t = end
    return shares
