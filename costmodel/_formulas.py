"""One pure, shape-based formula per layer kind, in a registry.

Every formula returns exact integer counts for one ``LayerSpec``; nothing here
knows about hardware or precision. An unknown kind raises: it is never counted
as zero.

Conventions (see ``_units``): ``macs`` are multiply-accumulates; ``other_ops``
are the remaining arithmetic (bias adds, comparisons, element-wise ops), kept
apart so that ``flops = 2 * macs`` stays comparable with
``torch.utils.flop_counter`` and ZOMI's lecture on model miniaturization
(推理系统-模型小型化). Memory access cost follows
ShuffleNet V2 (Ma et al., ECCV 2018, Sec. 2): input feature map read + output
feature map written + weights read, in elements.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

from costmodel import _spec as S
from costmodel._spec import LayerSpec


class Counts(NamedTuple):
    out_shape: tuple[int, ...]
    params: int  # trainable parameters, bias included
    bias_params: int  # the bias part of ``params``
    macs: int
    other_ops: int
    input_elements: int  # activations read
    output_elements: int  # activations written
    weight_elements: int  # weights and folded buffers read
    alias: bool = False  # a view (flatten, identity): no kernel, no traffic

    @property
    def mac_elements(self) -> int:
        return self.input_elements + self.output_elements + self.weight_elements


class UnsupportedLayerError(ValueError):
    """Raised for a layer kind (or configuration) that has no formula."""


Formula = Callable[[LayerSpec], Counts]
_FORMULAS: dict[str, Formula] = {}


def register(*ops: str) -> Callable[[Formula], Formula]:
    def wrap(fn: Formula) -> Formula:
        for op in ops:
            if op in _FORMULAS:
                raise ValueError(f"a formula for op={op!r} is already registered")
            _FORMULAS[op] = fn
        return fn

    return wrap


def known_ops() -> list[str]:
    return sorted(_FORMULAS)


@functools.lru_cache(maxsize=1 << 16)
def count(spec: LayerSpec) -> Counts:
    """Exact counts for one layer (cached: ``name``/``inputs`` are not part of the key)."""
    try:
        formula = _FORMULAS[spec.op]
    except KeyError:
        raise UnsupportedLayerError(
            f"no cost formula for op={spec.op!r} ({spec._who()}); known ops: {known_ops()}"
        ) from None
    return formula(spec)


def output_shape(spec: LayerSpec) -> tuple[int, ...]:
    return count(spec).out_shape


def _nchw(spec: LayerSpec) -> tuple[int, int, int, int]:
    if len(spec.in_shape) != 4:
        raise ValueError(f"{spec._who()}: in_shape={spec.in_shape} must be (N, C, H, W)")
    n, c, h, w = spec.in_shape
    return n, c, h, w


def _window_out(size: int, k: int, s: int, p: int, d: int, spec: LayerSpec, axis: str) -> int:
    # floor((size + 2p - d(k-1) - 1) / s) + 1, as torch.nn.Conv2d / MaxPool2d document.
    out = (size + 2 * p - d * (k - 1) - 1) // s + 1
    if out < 1:
        raise ValueError(
            f"{spec._who()}: input {axis}={size} is too small for kernel={k}, "
            f"stride={s}, padding={p}, dilation={d}"
        )
    return out


def _spatial_out(spec: LayerSpec, h: int, w: int) -> tuple[int, int]:
    (kh, kw), (sh, sw) = spec.kernel_size, spec.stride
    (ph, pw), (dh, dw) = spec.padding, spec.dilation
    if min(kh, kw, sh, sw, dh, dw) < 1 or min(ph, pw) < 0:
        raise ValueError(
            f"{spec._who()}: kernel_size={spec.kernel_size}, stride={spec.stride}, "
            f"dilation={spec.dilation} must be >= 1 and padding={spec.padding} >= 0"
        )
    return (
        _window_out(h, kh, sh, ph, dh, spec, "height"),
        _window_out(w, kw, sw, pw, dw, spec, "width"),
    )


@register(S.CONV2D)
def conv2d(spec: LayerSpec) -> Counts:
    """General 2-D convolution; standard, group, depthwise and pointwise are cases.

    ZOMI's model-miniaturization lecture (slides 典型结构对比, comparison of
    typical structures), with H, W the output size:
      standard  Params kh*kw*cin*cout,    MACs kh*kw*cin*cout*H*W
      group     Params kh*kw*cin*cout/g,  MACs kh*kw*cin*cout*H*W/g
      depthwise Params kh*kw*cout,        MACs kh*kw*cout*H*W   (g = cin = cout)
    Bias adds cout params and one add per output element (other_ops).
    """
    n, c, h, w = _nchw(spec)
    g, cout = spec.groups, spec.out_channels
    if cout < 1:
        raise ValueError(f"{spec._who()}: out_channels={cout} must be >= 1")
    if c % g:
        raise ValueError(f"{spec._who()}: groups={g} must divide in_channels={c}")
    if cout % g:
        raise ValueError(f"{spec._who()}: groups={g} must divide out_channels={cout}")
    ho, wo = _spatial_out(spec, h, w)
    kh, kw = spec.kernel_size
    weights = kh * kw * (c // g) * cout
    bias = cout if spec.bias else 0
    out_elems = n * cout * ho * wo
    return Counts(
        out_shape=(n, cout, ho, wo),
        params=weights + bias,
        bias_params=bias,
        macs=out_elems * kh * kw * (c // g),
        other_ops=out_elems if spec.bias else 0,
        input_elements=n * c * h * w,
        output_elements=out_elems,
        weight_elements=weights + bias,
    )


@register(S.LINEAR)
def linear(spec: LayerSpec) -> Counts:
    """Fully connected layer on (N, ..., F). Lecture: Params cin*cout, MACs cin*cout per row."""
    fin, fout = spec.in_shape[-1], spec.out_channels
    if fout < 1:
        raise ValueError(f"{spec._who()}: out_channels={fout} must be >= 1")
    rows = math.prod(spec.in_shape[:-1])  # every leading dim is a row (3-D inputs too)
    bias = fout if spec.bias else 0
    return Counts(
        out_shape=(*spec.in_shape[:-1], fout),
        params=fin * fout + bias,
        bias_params=bias,
        macs=rows * fin * fout,
        other_ops=rows * fout if spec.bias else 0,
        input_elements=rows * fin,
        output_elements=rows * fout,
        weight_elements=fin * fout + bias,
    )


@register(S.BATCHNORM2D)
def batchnorm2d(spec: LayerSpec) -> Counts:
    """Inference batch norm, folded to y = x * a + b: one MAC per element.

    It reads two values per channel (a, b); the affine weight and bias are the
    trainable params (running statistics are buffers, not params).
    """
    n, c, h, w = _nchw(spec)
    elems = n * c * h * w
    return Counts(
        out_shape=spec.in_shape,
        params=2 * c if spec.affine else 0,
        bias_params=c if spec.affine else 0,
        macs=elems,
        other_ops=0,
        input_elements=elems,
        output_elements=elems,
        weight_elements=2 * c,
    )


# Element-wise ops per element, for roofline time only (never part of FLOPs):
# relu max(x,0); relu6 two clamps; hardsigmoid mul-add + two clamps;
# hardswish hardsigmoid + mul; sigmoid neg, exp, add, div; silu sigmoid + mul.
ACTIVATION_OPS_PER_ELEMENT: dict[str, int] = {
    S.RELU: 1,
    S.RELU6: 2,
    S.HARDSIGMOID: 3,
    S.HARDSWISH: 4,
    S.SIGMOID: 4,
    S.SILU: 5,
}


@register(*S.ACTIVATIONS)
def activation(spec: LayerSpec) -> Counts:
    elems = math.prod(spec.in_shape)
    return Counts(
        out_shape=spec.in_shape,
        params=0,
        bias_params=0,
        macs=0,
        other_ops=ACTIVATION_OPS_PER_ELEMENT[spec.op] * elems,
        input_elements=elems,
        output_elements=elems,
        weight_elements=0,
    )


@register(S.MAXPOOL2D, S.AVGPOOL2D)
def pool2d(spec: LayerSpec) -> Counts:
    """Max: kh*kw - 1 comparisons per output; average: kh*kw - 1 adds and one divide."""
    n, c, h, w = _nchw(spec)
    ho, wo = _spatial_out(spec, h, w)
    kh, kw = spec.kernel_size
    out_elems = n * c * ho * wo
    return Counts(
        out_shape=(n, c, ho, wo),
        params=0,
        bias_params=0,
        macs=0,
        other_ops=out_elems * (kh * kw - 1 if spec.op == S.MAXPOOL2D else kh * kw),
        input_elements=n * c * h * w,
        output_elements=out_elems,
        weight_elements=0,
    )


@register(S.GLOBAL_AVGPOOL2D)
def global_avgpool2d(spec: LayerSpec) -> Counts:
    n, c, h, w = _nchw(spec)
    return Counts(
        out_shape=(n, c, 1, 1),
        params=0,
        bias_params=0,
        macs=0,
        other_ops=n * c * h * w,  # h*w - 1 adds and one divide per channel
        input_elements=n * c * h * w,
        output_elements=n * c,
        weight_elements=0,
    )


def _elementwise(spec: LayerSpec) -> Counts:
    """One op per output element over operands read once, written to a tensor of ``in_shape``.

    Three cases:
    - ``num_inputs=1``: with a Python scalar (``x + 3``, ``x / 6``, NAS-Bench-201's zero op
      ``x.mul(0.)``); reads x once;
    - ``num_inputs>=2`` of equal shape: (num_inputs - 1) ops per element;
    - ``num_inputs=2`` with ``other_shape``: the second operand broadcasts, as the
      squeeze-and-excitation gate does (Hu et al., CVPR 2018, Eq. 4: x~_c = s_c * u_c,
      s of shape (N, C, 1, 1)); it is read once, not once per element (ShuffleNet V2's
      memory access cost counts tensors read and written).
    """
    elems = math.prod(spec.in_shape)
    other = spec.other_shape
    if other:
        if spec.num_inputs != 2:
            raise ValueError(
                f"{spec._who()}: other_shape={other} needs num_inputs=2, not {spec.num_inputs}"
            )
        if len(other) != len(spec.in_shape) or any(
            o not in (1, d) for o, d in zip(other, spec.in_shape, strict=True)
        ):
            raise ValueError(
                f"{spec._who()}: other_shape={other} does not broadcast over "
                f"in_shape={spec.in_shape}"
            )
        read = elems + math.prod(other)
    else:
        read = spec.num_inputs * elems
    return Counts(
        out_shape=spec.in_shape,
        params=0,
        bias_params=0,
        macs=0,
        other_ops=max(spec.num_inputs - 1, 1) * elems,
        input_elements=read,
        output_elements=elems,
        weight_elements=0,
    )


@register(S.ADD)
def add(spec: LayerSpec) -> Counts:
    """Element-wise sum or difference (ShuffleNet V2 G4: element-wise ops are not free).

    A difference costs as a sum: one op per element over the same tensors.
    """
    return _elementwise(spec)


@register(S.MUL)
def mul(spec: LayerSpec) -> Counts:
    """Element-wise product or quotient, never part of MACs (a quotient costs as a product)."""
    return _elementwise(spec)


@register(S.CHANNEL_SHUFFLE)
def channel_shuffle(spec: LayerSpec) -> Counts:
    """ShuffleNet (Zhang et al., CVPR 2018) channel shuffle: a pure permutation copy."""
    n, c, h, w = _nchw(spec)
    if c % spec.groups:
        raise ValueError(f"{spec._who()}: groups={spec.groups} must divide channels={c}")
    elems = n * c * h * w
    return Counts(spec.in_shape, 0, 0, 0, 0, elems, elems, 0)


@register(S.CONCAT)
def concat(spec: LayerSpec) -> Counts:
    """torch.cat of ``num_inputs`` (N, C_i, H, W) tensors along channels, the first of
    ``in_shape``, into ``out_channels`` = sum of C_i: a copy, every element read once and
    written once (ShuffleNet V2, Ma et al., ECCV 2018, Sec. 3: concat is not free)."""
    n, c, h, w = _nchw(spec)
    if spec.num_inputs < 2:
        raise ValueError(f"{spec._who()}: num_inputs={spec.num_inputs} must be >= 2")
    if spec.out_channels < c + spec.num_inputs - 1:
        raise ValueError(
            f"{spec._who()}: out_channels={spec.out_channels} cannot hold the first input's "
            f"{c} channels and {spec.num_inputs - 1} more input(s)"
        )
    elems = n * spec.out_channels * h * w
    return Counts((n, spec.out_channels, h, w), 0, 0, 0, 0, elems, elems, 0)


@register(S.SPLIT)
def split(spec: LayerSpec) -> Counts:
    """chunk / split along channels: views of the input, free (no kernel, no traffic).

    ``out_shape`` is the input's: the views partition it, and each reader reads its part.
    """
    _nchw(spec)
    return Counts(spec.in_shape, 0, 0, 0, 0, 0, 0, 0, alias=True)


@register(S.FLATTEN)
def flatten(spec: LayerSpec) -> Counts:
    """torch.flatten(x, 1) on a contiguous tensor is a view: free."""
    n = spec.in_shape[0]
    return Counts((n, math.prod(spec.in_shape[1:])), 0, 0, 0, 0, 0, 0, 0, alias=True)


@register(S.IDENTITY)
def identity(spec: LayerSpec) -> Counts:
    """Identity and inference-mode dropout: free."""
    return Counts(spec.in_shape, 0, 0, 0, 0, 0, 0, 0, alias=True)
