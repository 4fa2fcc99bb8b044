"""Single-layer benchmarks: how each op runs alone, and the sweep of shapes calibration times.

One registration per op (``register_bench``, or ``register_module`` for an op
that a network runs as a module call), like the formula registry: an op
without one cannot be benchmarked and says so.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from costmodel import _spec as S
from costmodel._formulas import count
from costmodel._spec import LayerSpec

# Seeds calibration's sweep of shapes, its networks and torch (validation uses others).
CALIBRATION_SEED = 20260101

LayerCall = Callable[[], Any]
# (layer, its input tensor on the device) -> a zero-argument call running the layer.
Bench = Callable[[LayerSpec, torch.Tensor], LayerCall]
_BENCHES: dict[str, Bench] = {}


def register_bench(*ops: str) -> Callable[[Bench], Bench]:
    def wrap(bench: Bench) -> Bench:
        for op in ops:
            if op in _BENCHES:
                raise ValueError(f"a benchmark for op={op!r} is already registered")
            _BENCHES[op] = bench
        return bench

    return wrap


def register_module(
    *ops: str,
) -> Callable[[Callable[[LayerSpec], nn.Module]], Callable[[LayerSpec], nn.Module]]:
    """Register ``factory(spec) -> nn.Module``: the layer runs as ``module(x)``."""

    def wrap(factory: Callable[[LayerSpec], nn.Module]) -> Callable[[LayerSpec], nn.Module]:
        def bench(spec: LayerSpec, x: torch.Tensor) -> LayerCall:
            m = factory(spec).to(x.device).eval()
            return lambda: m(x)

        register_bench(*ops)(bench)
        return factory

    return wrap


@register_module(S.CONV2D)
def _conv2d(spec: LayerSpec) -> nn.Module:
    return nn.Conv2d(
        spec.in_channels,
        spec.out_channels,
        spec.kernel_size,
        spec.stride,
        spec.padding,
        spec.dilation,
        spec.groups,
        bias=spec.bias,
    )


@register_module(S.LINEAR)
def _linear(spec: LayerSpec) -> nn.Module:
    return nn.Linear(spec.in_channels, spec.out_channels, bias=spec.bias)


@register_module(S.BATCHNORM2D)
def _batchnorm2d(spec: LayerSpec) -> nn.Module:
    return nn.BatchNorm2d(spec.in_shape[1], affine=spec.affine)


@register_module(S.MAXPOOL2D)
def _maxpool2d(spec: LayerSpec) -> nn.Module:
    return nn.MaxPool2d(spec.kernel_size, spec.stride, spec.padding, spec.dilation)


@register_module(S.AVGPOOL2D)
def _avgpool2d(spec: LayerSpec) -> nn.Module:
    return nn.AvgPool2d(spec.kernel_size, spec.stride, spec.padding)


@register_module(S.CHANNEL_SHUFFLE)
def _channel_shuffle(spec: LayerSpec) -> nn.Module:
    return nn.ChannelShuffle(spec.groups)


@register_bench(S.CONCAT)
def _concat(spec: LayerSpec, x: torch.Tensor) -> LayerCall:
    # the other inputs share the first one's (N, H, W) and split the remaining channels
    n, c, h, w = spec.in_shape
    rest = spec.out_channels - c
    sizes = [rest // (spec.num_inputs - 1)] * (spec.num_inputs - 1)
    sizes[-1] += rest - sum(sizes)
    others = [torch.zeros(n, k, h, w, dtype=x.dtype, device=x.device) for k in sizes]
    return lambda: torch.cat([x, *others], 1)


@register_bench(S.SPLIT)
def _split(spec: LayerSpec, x: torch.Tensor) -> LayerCall:
    return lambda: x.chunk(2, 1)


def _parameter_free(make: Callable[[], nn.Module], *ops: str) -> None:
    register_module(*ops)(lambda spec: make())


_parameter_free(nn.ReLU, S.RELU)
_parameter_free(nn.ReLU6, S.RELU6)
_parameter_free(nn.Hardswish, S.HARDSWISH)
_parameter_free(nn.Hardsigmoid, S.HARDSIGMOID)
_parameter_free(nn.Sigmoid, S.SIGMOID)
_parameter_free(nn.SiLU, S.SILU)
_parameter_free(lambda: nn.AdaptiveAvgPool2d(1), S.GLOBAL_AVGPOOL2D)
_parameter_free(nn.Flatten, S.FLATTEN)
_parameter_free(nn.Identity, S.IDENTITY)


@register_bench(S.ADD)
def _add(spec: LayerSpec, x: torch.Tensor) -> LayerCall:
    """``x + y`` (or ``x + 3.0``, ``x + bias``) in a block's forward: a functional op."""
    if spec.num_inputs == 1:
        return lambda: x + 3.0
    ys = [
        torch.randn(spec.other_shape or spec.in_shape, device=x.device)
        for _ in range(spec.num_inputs - 1)
    ]

    def add() -> Any:
        out = x
        for y in ys:
            out = out + y
        return out

    return add


@register_bench(S.MUL)
def _mul(spec: LayerSpec, x: torch.Tensor) -> LayerCall:
    """``x.mul(0.)`` (NAS-Bench-201's zero op), a gate ``x * s`` or ``x * y``: functional."""
    if spec.num_inputs == 1:
        return lambda: x.mul(0.0)
    y = torch.randn(spec.other_shape or spec.in_shape, device=x.device)
    return lambda: x * y


def layer_call(spec: LayerSpec, device: str) -> LayerCall:
    """A zero-argument callable running one layer the way a network runs it."""
    return layer_call_and_input(spec, device)[0]


def layer_call_and_input(spec: LayerSpec, device: str) -> tuple[LayerCall, torch.Tensor]:
    """``layer_call`` and the input tensor it reads (to write it just before a timed call)."""
    x = torch.randn(spec.in_shape, device=device)
    try:
        bench = _BENCHES[spec.op]
    except KeyError:
        raise ValueError(f"op={spec.op!r} has no benchmark; known: {sorted(_BENCHES)}") from None
    return bench(spec, x), x


# --------------------------------------------------------------------------- the sweep

_CHANNELS = [8, 12, 16, 24, 32, 48, 64, 96, 128, 160, 256]
_SIZES = [2, 4, 7, 8, 14, 16, 28, 32]
_BATCHES = [1, 1, 1, 2, 4, 8, 16, 32]
# Benchmarks per kernel class in the full sweep.
_PER_CLASS = {
    "dense_conv": 36,
    "pointwise_conv": 30,
    "group_conv": 16,
    "depthwise_conv": 24,
    "linear": 8,
    "batchnorm": 14,
    "activation": 24,
    "elementwise": 16,
    "pooling": 12,
    "max_pooling": 8,
    "global_pooling": 10,
}
# A draw: (rng, input shape, output channels, kernel, stride) -> a layer, or None to redraw.
_Draw = Callable[[random.Random, tuple[int, int, int, int], int, int, int], LayerSpec | None]


def _group_conv(
    rng: random.Random, shape: tuple[int, int, int, int], co: int, k: int, s: int
) -> LayerSpec | None:
    c = shape[1]
    g = rng.choice([2, 4, 8])
    if c % g or co % g:
        return None
    spec = LayerSpec(
        S.CONV2D, shape, co, rng.choice([1, 3]), 1, 0 if rng.random() < 0.5 else 1, groups=g
    )
    return dataclasses.replace(spec, padding=(0, 0)) if spec.kernel_size == (1, 1) else spec


def _elementwise(
    rng: random.Random, shape: tuple[int, int, int, int], co: int, k: int, s: int
) -> LayerSpec | None:
    r = rng.random()
    if r < 0.5:
        return LayerSpec(S.ADD, shape, num_inputs=rng.choice([2, 2, 3]))
    if r < 0.7:  # times a scalar: NAS-Bench-201's zero op
        return LayerSpec(S.MUL, shape)
    if r < 0.85:  # a squeeze-and-excitation gate
        return LayerSpec(S.MUL, shape, num_inputs=2, other_shape=(shape[0], shape[1], 1, 1))
    if shape[1] % 2:
        return None
    return LayerSpec(S.CHANNEL_SHUFFLE, shape, groups=2)


def _window(op: str) -> _Draw:
    """Windowed pools of 2x2 and 3x3 at stride 1 (NAS-Bench-201's cell) and stride 2."""

    def draw(
        rng: random.Random, shape: tuple[int, int, int, int], co: int, k: int, s: int
    ) -> LayerSpec | None:
        kk, stride = rng.choice([2, 3]), rng.choice([1, 2])
        if kk > shape[2]:
            return None
        return LayerSpec(
            op, shape, kernel_size=kk, stride=stride, padding=kk // 2 if kk == 3 else 0
        )

    return draw


_DRAWS: dict[str, _Draw] = {
    "dense_conv": lambda rng, shape, co, k, s: LayerSpec(S.CONV2D, shape, co, k, s, k // 2),
    "pointwise_conv": lambda rng, shape, co, k, s: LayerSpec(S.CONV2D, shape, co, 1, 1, 0),
    "group_conv": _group_conv,
    "depthwise_conv": lambda rng, shape, co, k, s: LayerSpec(
        S.CONV2D, shape, shape[1], k, s, k // 2, groups=shape[1]
    ),
    "linear": lambda rng, shape, co, k, s: LayerSpec(
        S.LINEAR, (shape[0], shape[1] * rng.choice([1, 4, 16])), co, bias=True
    ),
    "batchnorm": lambda rng, shape, co, k, s: LayerSpec(S.BATCHNORM2D, shape),
    "activation": lambda rng, shape, co, k, s: LayerSpec(
        rng.choice([S.RELU, S.RELU6, S.HARDSWISH, S.SILU, S.SIGMOID]), shape
    ),
    "elementwise": _elementwise,
    "pooling": _window(S.AVGPOOL2D),
    "max_pooling": _window(S.MAXPOOL2D),
    "global_pooling": lambda rng, shape, co, k, s: LayerSpec(S.GLOBAL_AVGPOOL2D, shape),
}


# Picks an input shape (N, C, H, W) and output channels for a draw.
_PickShape = Callable[[random.Random], tuple[tuple[int, int, int, int], int]]


def _draw_class(
    rng: random.Random,
    cls: str,
    n: int,
    pick: _PickShape,
    accept: Callable[[LayerSpec, list[LayerSpec]], bool],
) -> list[LayerSpec]:
    """Up to ``n`` layers of kernel class ``cls`` that ``accept`` takes (given those so far)."""
    specs: list[LayerSpec] = []
    tries = 0
    while len(specs) < n and tries < 5000:
        tries += 1
        shape, co = pick(rng)
        k = rng.choice([3, 3, 5]) if cls in ("dense_conv", "depthwise_conv") else 1
        s = rng.choice([1, 1, 1, 2])
        try:
            spec = _DRAWS[cls](rng, shape, co, k, s)
            if spec is None or not accept(spec, specs):
                continue
        except ValueError:
            continue
        specs.append(spec)
    return specs


def _pick_sweep_shape(rng: random.Random) -> tuple[tuple[int, int, int, int], int]:
    b, c, h = rng.choice(_BATCHES), rng.choice(_CHANNELS), rng.choice(_SIZES)
    return (b, c, h, h), rng.choice(_CHANNELS)


# Classifier heads (batch, features, classes), appended after the seeded draws so that
# those stay as they were. The drawn linears are as narrow as the convs and mostly pay
# their fixed cost on a CPU; a head of 1024-2048 features to 1000 classes at batch 32
# is bound by its GEMM, and only such shapes identify the linear class's efficiencies.
_HEADS = (
    (1, 1280, 1000),
    (8, 1024, 1000),
    (32, 512, 100),
    (32, 1024, 1000),
    (32, 2048, 1000),
    (32, 1280, 10),
)


def shape_sweep(quick: bool, seed: int = CALIBRATION_SEED) -> list[LayerSpec]:
    """Single layers of every kernel class over channels, sizes, batches (seeded), then
    the classifier heads ``_HEADS``."""
    rng = random.Random(seed)
    scale = 0.4 if quick else 1.0
    # Up to the largest layers of a CIFAR-size network at batch 32 (~10 ms on one
    # CPU thread); the quick sweep stays small.
    max_macs = 3e7 if quick else 3e8

    def within(spec: LayerSpec, _so_far: list[LayerSpec]) -> bool:
        return count(spec).macs <= max_macs

    specs: list[LayerSpec] = []
    for cls, n in _PER_CLASS.items():
        specs += _draw_class(rng, cls, max(3, int(n * scale)), _pick_sweep_shape, within)
    heads = [h for h in classifier_heads() if count(h).macs <= max_macs]
    return specs + heads[: 3 if quick else None]


def classifier_heads() -> list[LayerSpec]:
    """The linear layers of ``_HEADS``, as the sweep times them."""
    return [LayerSpec(S.LINEAR, (b, f), k, bias=True) for b, f, k in _HEADS]


# Working sets past a CPU's last-level cache: the sweep above stays mostly inside it
# (its largest layers are CIFAR-size), so it cannot show how a class slows when its
# bytes come from DRAM, which ImageNet-size inputs at batch 32 need.
_SPILL_CHANNELS = [24, 32, 48, 64, 96, 128, 160, 240, 272]
_SPILL_SIZES = [28, 32, 44, 56, 72, 88]
_SPILL_BYTES = (16 << 20, 128 << 20)  # fp32 mac bytes, from above any cache this runs on
_SPILL_PER_CLASS = 4


def _pick_spill_shape(rng: random.Random) -> tuple[tuple[int, int, int, int], int]:
    c, h = rng.choice(_SPILL_CHANNELS), rng.choice(_SPILL_SIZES)
    return (32, c, h, h), rng.choice(_SPILL_CHANNELS)


def spill_sweep(seed: int = CALIBRATION_SEED + 1, max_macs: float = 3e8) -> list[LayerSpec]:
    """Layers of every class but linear at batch 32 whose working set is 16-128 MiB (seeded)."""

    def accept(spec: LayerSpec, so_far: list[LayerSpec]) -> bool:
        n = count(spec)
        return (
            n.macs <= max_macs
            and _SPILL_BYTES[0] <= 4 * n.mac_elements <= _SPILL_BYTES[1]
            and spec not in so_far
        )

    rng = random.Random(seed)
    specs: list[LayerSpec] = []
    for cls in (c for c in _PER_CLASS if c != "linear"):
        specs += _draw_class(rng, cls, _SPILL_PER_CLASS, _pick_spill_shape, accept)
    return specs
