"""``estimate(arch)``: analytic costs of anything that lowers itself to layer specs, fast.

``arch`` is any object with ``input_shape`` (one sample, without the batch) and
``lower(batch)`` (its layers in execution order): a ``Lowerable``, such as
``searchspace.Architecture``. ``estimate`` equals ``analyze(arch.lower(batch),
...)`` (tests/test_searchspace_agreement.py).

When ``arch`` is also ``Segmented`` (a chain of segments: stem, blocks, head),
``estimate`` never builds the whole layer list: a search samples the same blocks
again and again, so each segment's summed costs are computed once per (segment
key, input shape, batch, hardware profile, precision, runtime, latency model)
and cached. Where the latency model says a layer's time depends on the whole
network (``LatencyModel.whole_network``: the fresh pages a CPU forward pass
faults on, costmodel._allocator), ``estimate`` is ``analyze`` of the lowered network.

Composition across segments (segments run one after another):
- counts and roofline times add up;
- peak activation memory is the max over segments of the segment's own peak
  with its input live: at a segment boundary only the boundary tensor is live;
- latency follows ``costmodel._latency.critical_path``, a two-stage pipeline
  (host issues, device runs). With H_k, D_k the cumulative host and device
  times of the non-free kernels, its total is D_n + max(0, max_k H_k - D_{k-1}),
  so a segment contributes (sum host, sum device, local max of H - D_prev).

Integers (params, MACs, MAC bytes, peak memory) are exact. Float totals are
summed per segment first, so they can differ from ``analyze`` in the last bits
(relative error ~1e-15; floating-point addition is not associative). The
per-layer ``layers`` are computed on first access with ``analyze`` itself, so
they are exactly ``analyze``'s.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from functools import cached_property
from itertools import accumulate
from operator import add
from typing import Any, Protocol

from costmodel._formulas import count
from costmodel._latency import FREE, FUSED, LatencyModel
from costmodel._report import (
    _DEFAULT_MODEL,
    CostReport,
    LayerCost,
    Totals,
    analyze,
    layer_mac_bytes,
    peak_activation_elements,
)
from costmodel._spec import LayerSpec
from costmodel._units import BITS_PER_ELEMENT, STORAGE_PRECISIONS, check_precision
from hw_profiles import HardwareProfile, load


class Lowerable(Protocol):
    """A network that lowers itself to layer specs: what ``estimate`` costs."""

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One sample's input shape, without the batch (e.g. channels, height, width)."""
        ...

    def lower(self, batch: int) -> Sequence[LayerSpec]:
        """The layers in execution order at this batch (``inputs`` name their producers)."""
        ...


class Segment(Protocol):
    """One part of a chain network (stem, block, head) that lowers itself alone.

    ``key`` and the input shape must determine the segment's layers (a str key
    is fastest: Python caches its hash). ``lower`` names the segment's input
    ``NETWORK_INPUT``; the segment must start with a kernel (not a batch norm
    or activation that a fused runtime would fold into its producer), so that
    it costs alone what it costs inside the network.
    """

    key: Hashable

    def lower(self, batch: int, in_chw: tuple[int, ...]) -> Sequence[LayerSpec]: ...


class Segmented(Lowerable, Protocol):
    """A ``Lowerable`` chain of segments, each reading the previous one's output."""

    def segments(self) -> Sequence[Segment]: ...


_NEG_INF = float("-inf")
# Model size per storage precision, as analyze reports it.
_SIZE_BITS = tuple((p, BITS_PER_ELEMENT[p]) for p in STORAGE_PRECISIONS)


# Summed costs of one segment (stem, block or head) at one input shape and context, as a
# plain tuple (the hot loop reads it by position):
(_OUT_CHW, _PARAMS, _BIAS, _MACS, _OTHER, _MAC_EL, _MAC_B, _COMPUTE, _MEMORY, _OVERHEAD,
 _HOST_MINUS_DEVICE, _DEVICE, _LEAD, _PEAK) = range(14)  # fmt: skip
# _OVERHEAD: device overhead + host cost of the non-free kernels; _HOST_MINUS_DEVICE,
# _DEVICE: pipeline sums (host minus device, device); _LEAD: max_k (H_k - D_{k-1}) inside
# the segment with H, D cumulative host and device times (-inf if it has no kernel);
# _PEAK: live activation elements at the segment's peak, its input included.
SegmentCost = tuple


class _Context:
    __slots__ = ("bits", "cache", "hw", "model", "precision", "runtime")

    def __init__(self, hw: HardwareProfile, precision: str, runtime: str, model: LatencyModel):
        self.hw, self.precision, self.runtime, self.model = hw, precision, runtime, model
        self.bits = BITS_PER_ELEMENT[precision]
        self.cache: dict[tuple[Any, ...], SegmentCost] = {}


# (hw argument, precision, runtime, model, batch) -> context with its segment cache.
# Profiles and models hash by identity; the key holds them, so an identity is never reused.
_CONTEXTS: dict[tuple[Any, ...], _Context] = {}
_MAX_CONTEXTS = 64


def clear_cache() -> None:
    """Drop every cached segment cost (for benchmarks of a cold start)."""
    _CONTEXTS.clear()


def _context(
    hw: Any, precision: str, runtime: str, model: LatencyModel | None, batch: int
) -> _Context:
    key = (hw, precision, runtime, model, batch)
    try:
        return _CONTEXTS[key]
    except (KeyError, TypeError):
        pass
    hw_profile = load(hw)
    check_precision(precision)
    hw_profile.runtime(runtime)  # raises naming the runtime
    ctx = _Context(hw_profile, precision, runtime, model or _DEFAULT_MODEL)
    if len(_CONTEXTS) >= _MAX_CONTEXTS:  # e.g. a fresh model object per call: drop the oldest
        del _CONTEXTS[next(iter(_CONTEXTS))]
    try:
        _CONTEXTS[key] = ctx
    except TypeError:  # an unhashable hw argument: do not cache the context
        pass
    return ctx


def _segment_cost(ctx: _Context, specs: Sequence[LayerSpec], in_elems: int) -> SegmentCost:
    p = ctx.precision
    counts = [count(s) for s in specs]
    mac_bytes = [layer_mac_bytes(c, p) for c in counts]
    times = ctx.model.kernel_times(
        list(zip(specs, counts, mac_bytes, strict=True)), ctx.hw, p, ctx.runtime
    )
    host = dev = 0.0
    lead = _NEG_INF
    for t in times:
        if t.bound in (FREE, FUSED):  # as critical_path: views and fused epilogues issue nothing
            continue
        host += t.host_s
        lead = max(lead, host - dev)
        dev += t.device_s
    out_elems = []
    for c in counts:
        n = 1
        for d in c.out_shape:
            n *= d
        out_elems.append(n)
    return (
        counts[-1].out_shape[1:],
        sum(c.params for c in counts),
        sum(c.bias_params for c in counts),
        sum(c.macs for c in counts),
        sum(c.other_ops for c in counts),
        sum(c.mac_elements for c in counts),
        sum(mac_bytes),
        sum(t.compute_s for t in times),
        sum(t.memory_s for t in times),
        sum(t.overhead_s + t.host_s for t in times if t.bound != FREE),
        host - dev,
        dev,
        lead,
        peak_activation_elements(specs, [c.alias for c in counts], out_elems, in_elems),
    )


def _segment(ctx: _Context, part: Segment, batch: int, chw: tuple[int, ...]) -> SegmentCost:
    """Lower one segment alone and cost it, its input live at its start."""
    in_elems = batch
    for d in chw:
        in_elems *= d
    return _segment_cost(ctx, part.lower(batch, chw), in_elems)


class _EstimateReport(CostReport):
    """A CostReport whose per-layer costs are computed on first access of ``layers``.

    Pickling or copying gives a plain ``CostReport`` (layers computed), never the cache.
    """

    def __init__(
        self, total: Totals, input_shape: tuple[int, ...], arch: Lowerable, ctx: _Context
    ) -> None:
        # A frozen dataclass's fields, written once like its own __init__ does, but
        # without ``layers``: the cached property below computes those when first read.
        vars(self).update(
            total=total, hw=ctx.hw.name, precision=ctx.precision, runtime=ctx.runtime,
            input_shape=input_shape, unsupported=(), _arch=arch, _ctx=ctx,
        )  # fmt: skip

    @cached_property
    def layers(self) -> tuple[LayerCost, ...]:  # type: ignore[override]
        ctx: _Context = vars(self)["_ctx"]
        lowered = vars(self)["_arch"].lower(self.input_shape[0])
        return analyze(lowered, ctx.hw, ctx.precision, ctx.runtime, model=ctx.model).layers

    def __reduce__(self) -> tuple[Any, ...]:
        return (CostReport, (self.layers, self.total, self.hw, self.precision, self.runtime,
                             self.input_shape, self.unsupported))  # fmt: skip


def _whole_network(
    arch: Lowerable, batch: int, ctx: _Context, precision: str, runtime: str
) -> CostReport:
    """``arch``'s full layer list costed in one piece (no segment cache)."""
    return analyze(
        arch.lower(batch),
        ctx.hw,
        precision,
        runtime,
        input_shape=(batch, *arch.input_shape),
        model=ctx.model,
    )


def estimate(
    arch: Lowerable,
    hw: str | HardwareProfile = "t4",
    precision: str = "fp32",
    batch: int = 1,
    runtime: str = "eager",
    *,
    model: LatencyModel | None = None,
) -> CostReport:
    """Costs of ``arch`` (anything ``Lowerable``, e.g. a ``searchspace.Architecture``).

    Same result as ``analyze(arch.lower(batch), hw, precision, runtime)``;
    ``macs`` are multiply-accumulates, ``flops = 2 * macs``. A ``Segmented``
    network is costed from cached per-segment sums without building its layer list.
    """
    if type(batch) is not int or batch < 1:
        raise ValueError(f"batch={batch!r} must be an int >= 1")
    ctx = _context(hw, precision, runtime, model, batch)
    try:
        chw = arch.input_shape
        segments = arch.segments
    except AttributeError:
        if hasattr(arch, "input_shape") and callable(getattr(arch, "lower", None)):
            return _whole_network(arch, batch, ctx, precision, runtime)
        raise TypeError(
            f"arch={arch!r} must lower itself to layer specs (input_shape and "
            "lower(batch)), e.g. a searchspace.Architecture"
        ) from None
    if getattr(ctx.model, "whole_network", lambda hw: False)(ctx.hw):
        # A layer's cost depends on the layers around it: segments cannot be costed alone.
        return _whole_network(arch, batch, ctx, precision, runtime)
    cache = ctx.cache
    segs = []
    for part in segments():
        # Keys: the part's key (a str: its hash is cached) and the input shape.
        seg = cache.get((part.key, chw))
        if seg is None:
            seg = cache[(part.key, chw)] = _segment(ctx, part, batch, chw)
        segs.append(seg)
        chw = seg[0]  # _OUT_CHW
    # Columns, summed in C. Pipeline: lead of segment i is (H - D before it) + its local lead.
    cols = tuple(zip(*segs, strict=False))
    params = sum(cols[_PARAMS])
    best = max(0.0, max(map(add, accumulate(cols[_HOST_MINUS_DEVICE], initial=0.0), cols[_LEAD])))
    total = Totals(
        params=params,
        bias_params=sum(cols[_BIAS]),
        macs=sum(cols[_MACS]),
        other_ops=sum(cols[_OTHER]),
        mac_elements=sum(cols[_MAC_EL]),
        mac_bytes=sum(cols[_MAC_B]),
        latency_s=sum(cols[_DEVICE]) + best,
        compute_s=sum(cols[_COMPUTE]),
        memory_s=sum(cols[_MEMORY]),
        overhead_s=sum(cols[_OVERHEAD]),
        # = elements_to_bytes(peak, precision)
        peak_activation_bytes=(max(cols[_PEAK]) * ctx.bits + 7) // 8,
        model_size_bytes={q: (params * b + 7) // 8 for q, b in _SIZE_BITS},
    )
    return _EstimateReport(total, (batch, *arch.input_shape), arch, ctx)
