"""Per-layer and per-network cost reports."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

from costmodel._formulas import Counts, count
from costmodel._kinds import kernel_class
from costmodel._latency import FREE, KernelTime, LatencyModel, RooflineModel, critical_path
from costmodel._spec import NETWORK_INPUT, LayerSpec
from costmodel._units import (
    STORAGE_PRECISIONS,
    check_precision,
    elements_to_bytes,
    macs_to_flops,
)
from hw_profiles import HardwareProfile, load


@dataclass(frozen=True, slots=True)
class LayerCost:
    """Costs of one layer. ``macs`` are multiply-accumulates, ``flops = 2 * macs``."""

    name: str
    op: str
    kernel_class: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    params: int
    bias_params: int
    macs: int
    other_ops: int
    mac_elements: int
    mac_bytes: int
    latency_s: float  # this layer's share of the network latency
    compute_s: float
    memory_s: float
    overhead_s: float
    bound: str

    @property
    def flops(self) -> int:
        return macs_to_flops(self.macs)

    @property
    def intensity(self) -> float:
        """Arithmetic intensity: (FLOPs + other ops) per byte moved."""
        return (self.flops + self.other_ops) / self.mac_bytes if self.mac_bytes else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["in_shape"], d["out_shape"] = list(self.in_shape), list(self.out_shape)
        d["flops"], d["intensity"] = self.flops, self.intensity
        return d


@dataclass(frozen=True, slots=True)
class Totals:
    params: int
    bias_params: int
    macs: int
    other_ops: int
    mac_elements: int
    mac_bytes: int
    latency_s: float  # the network's critical path (what a user measures)
    # Sums over layers of each component. They are not parts of latency_s: roofline
    # compute and memory overlap within a kernel, and on accelerators the host's
    # dispatch cost (included in overhead_s) overlaps device work.
    compute_s: float
    memory_s: float
    overhead_s: float  # fixed costs: per-kernel device overhead + host dispatch
    peak_activation_bytes: int  # largest set of live activations, network input included
    model_size_bytes: dict[str, int] = field(default_factory=dict)  # per precision

    @property
    def flops(self) -> int:
        return macs_to_flops(self.macs)

    @property
    def intensity(self) -> float:
        return (self.flops + self.other_ops) / self.mac_bytes if self.mac_bytes else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["flops"], d["intensity"] = self.flops, self.intensity
        return d


@dataclass(frozen=True)
class CostReport:
    """What ``profile()`` and ``estimate()`` return: layers, totals and their context."""

    layers: tuple[LayerCost, ...]
    total: Totals
    hw: str
    precision: str
    runtime: str
    input_shape: tuple[int, ...]
    unsupported: tuple[str, ...] = ()  # modules that could not be costed, by name

    @property
    def batch(self) -> int:
        return self.input_shape[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "conventions": {
                "macs": "multiply-accumulates (what the seed of this project, ZOMI's lecture "
                "on model miniaturization, calls FLOPs)",
                "flops": "2 * macs",
                "mac_bytes": "memory access cost: input read + output written + weights read",
                "latency_s": "seconds per forward pass of the whole batch",
            },
            "hw": self.hw,
            "precision": self.precision,
            "runtime": self.runtime,
            "input_shape": list(self.input_shape),
            "total": self.total.to_dict(),
            "layers": [layer.to_dict() for layer in self.layers],
            "unsupported": list(self.unsupported),
        }

    def to_json(self, **kw: Any) -> str:
        return json.dumps(self.to_dict(), **kw)

    @cached_property
    def by_name(self) -> dict[str, LayerCost]:
        return {layer.name: layer for layer in self.layers}


def peak_activation_elements(
    specs: Sequence[LayerSpec], alias: Sequence[bool], out_elems: Sequence[int], input_elems: int
) -> int:
    """Peak of live activation elements over an execution in the given order.

    A tensor lives from the layer that writes it to its last reader; views
    (flatten, identity) share their input's storage. The network output stays.
    Layers without ``inputs`` read the previous layer (a chain).
    """
    names = [s.name or f"#{i}" for i, s in enumerate(specs)]
    readers: list[tuple[str, ...]] = []
    for i, s in enumerate(specs):
        readers.append(s.inputs or ((names[i - 1],) if i else (NETWORK_INPUT,)))
    last_use: dict[str, int] = {}
    for i, rs in enumerate(readers):
        for r in rs:
            last_use[r] = i
    storage = {NETWORK_INPUT: NETWORK_INPUT}
    size = {NETWORK_INPUT: input_elems}
    refs = {NETWORK_INPUT: 1}
    live = peak = input_elems
    for i, name in enumerate(names):
        if alias[i]:
            root = storage.get(readers[i][0], NETWORK_INPUT)
            storage[name] = root
            refs[root] += 1
        else:
            storage[name] = name
            size[name] = out_elems[i]
            refs[name] = 1
            live += out_elems[i]
            peak = max(peak, live)
        for r in set(readers[i]):
            if last_use.get(r) == i and r in storage:
                root = storage[r]
                refs[root] -= 1
                if refs[root] == 0:
                    live -= size[root]
    return peak


def layer_mac_bytes(c: Counts, precision: str) -> int:
    """Memory access cost in bytes: each tensor packed at the precision (int4 rounds up)."""
    return (
        elements_to_bytes(c.input_elements, precision)
        + elements_to_bytes(c.output_elements, precision)
        + elements_to_bytes(c.weight_elements, precision)
    )


_DEFAULT_MODEL = RooflineModel()


def analyze(
    specs: Sequence[LayerSpec],
    hw: str | HardwareProfile = "t4",
    precision: str = "fp32",
    runtime: str = "eager",
    *,
    input_shape: tuple[int, ...] | None = None,
    unsupported: Sequence[str] = (),
    model: LatencyModel | None = None,
) -> CostReport:
    """Cost a network given as layer specs in execution order."""
    hw_profile = load(hw)
    check_precision(precision)
    hw_profile.runtime(runtime)
    if not specs:
        raise ValueError("a network needs at least one layer to be costed")
    counts = [count(s) for s in specs]
    mac_bytes = [layer_mac_bytes(c, precision) for c in counts]
    times: list[KernelTime] = (model or _DEFAULT_MODEL).kernel_times(
        list(zip(specs, counts, mac_bytes, strict=True)), hw_profile, precision, runtime
    )
    shares = critical_path(times)
    layers = tuple(
        LayerCost(
            name=s.name,
            op=s.op,
            kernel_class=_kernel_class(s, c.alias),
            in_shape=s.in_shape,
            out_shape=c.out_shape,
            params=c.params,
            bias_params=c.bias_params,
            macs=c.macs,
            other_ops=c.other_ops,
            mac_elements=c.mac_elements,
            mac_bytes=b,
            latency_s=share,
            compute_s=t.compute_s,
            memory_s=t.memory_s,
            overhead_s=t.overhead_s,
            bound=t.bound,
        )
        for s, c, b, t, share in zip(specs, counts, mac_bytes, times, shares, strict=True)
    )
    in_shape = input_shape or specs[0].in_shape
    peak = peak_activation_elements(
        specs,
        [c.alias for c in counts],
        [math.prod(c.out_shape) for c in counts],
        math.prod(in_shape),
    )
    params = sum(layer.params for layer in layers)
    total = Totals(
        params=params,
        bias_params=sum(layer.bias_params for layer in layers),
        macs=sum(layer.macs for layer in layers),
        other_ops=sum(layer.other_ops for layer in layers),
        mac_elements=sum(layer.mac_elements for layer in layers),
        mac_bytes=sum(mac_bytes),
        latency_s=sum(shares),
        compute_s=sum(t.compute_s for t in times),
        memory_s=sum(t.memory_s for t in times),
        overhead_s=sum(t.overhead_s + t.host_s for t in times if t.bound != FREE),
        peak_activation_bytes=elements_to_bytes(peak, precision),
        model_size_bytes={p: elements_to_bytes(params, p) for p in STORAGE_PRECISIONS},
    )
    return CostReport(
        layers=layers,
        total=total,
        hw=hw_profile.name,
        precision=precision,
        runtime=runtime,
        input_shape=tuple(in_shape),
        unsupported=tuple(unsupported),
    )


def _kernel_class(spec: LayerSpec, alias: bool) -> str:
    return "view" if alias else kernel_class(spec)
