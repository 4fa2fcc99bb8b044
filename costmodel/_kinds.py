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
