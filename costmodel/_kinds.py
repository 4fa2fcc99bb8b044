"""Which kernel class a layer runs as: the key into a profile's efficiency tables."""

from __future__ import annotations

from costmodel import _spec as S
from costmodel._spec import LayerSpec


def kernel_class(spec: LayerSpec) -> str:
    op = spec.op
    if op == S.CONV2D:
        c = spec.in_channels
        if spec.groups == 1:
            return "pointwise_conv" if spec.kernel_size == (1, 1) else "dense_conv"
        if spec.groups == c and spec.out_channels % c == 0:
            return "depthwise_conv"
        return "group_conv"
    if op == S.LINEAR:
        return "linear"
    if op == S.BATCHNORM2D:
        return "batchnorm"
    if op in S.ACTIVATIONS:
        return "activation"
    if op in (S.MAXPOOL2D, S.AVGPOOL2D, S.GLOBAL_AVGPOOL2D):
        return "pooling"
    return "elementwise"


def pytorch_cpu_uses_onednn(spec: LayerSpec, threads: int = 1) -> bool:
    """Whether PyTorch's CPU build runs this fp32 conv with oneDNN (else its native im2col).

    ``ConvParams::use_mkldnn`` in aten/src/ATen/native/Convolution.cpp: for a
    1x1, unstrided, undilated conv with batch < 16 on one thread native is
    faster; and native also wins unless the conv is grouped, has a kernel
    larger than 3x3, a batch above 1, or an input of more than 20480 elements.
    The two paths differ in fixed cost by ~70 us on the development CPU (a
    2x4x4x12 -> 8 conv: 92 us with oneDNN, 20 us native), which decides the
    ranking of small networks at batch 1. tests/test_latency.py checks this rule
    against the kernel the installed torch really dispatches.
    """
    if spec.op != S.CONV2D:
        raise ValueError(f"op={spec.op!r} is not a convolution")
    n, c, h, w = spec.in_shape
    kh, kw = spec.kernel_size
    one_by_one = kh == 1 and kw == 1
    strided = any(s != 1 for s in spec.stride)
    dilated = any(d != 1 for d in spec.dilation)
    if not (strided or dilated or n >= 16 or not one_by_one or threads > 1):
        return False
    return spec.groups > 1 or (kh > 3 and kw > 3) or n > 1 or n * c * h * w > 20480


def latency_class(spec: LayerSpec, conv_dispatch: str = "none", threads: int = 1) -> str:
    """The kernel class whose efficiency and fixed cost a layer's latency uses.

    ``kernel_class`` unless a profile models its runtime's algorithm choice:
    with ``conv_dispatch="pytorch_cpu"``, a conv PyTorch runs natively is
    "native_conv".
    """
    cls = kernel_class(spec)
    if (conv_dispatch == "pytorch_cpu" and spec.op == S.CONV2D
            and not pytorch_cpu_uses_onednn(spec, threads)):
        return "native_conv"
    return cls
