"""Which kernel class a layer runs as: the key into a profile's efficiency tables."""

from __future__ import annotations

from collections.abc import Callable

from costmodel import _spec as S
from costmodel._formulas import UnsupportedLayerError
from costmodel._spec import LayerSpec
from hw_profiles import KERNEL_CLASSES

ClassRule = Callable[[LayerSpec], str]
_CLASSES: dict[str, ClassRule] = {}


def register_class(*ops: str) -> Callable[[ClassRule], ClassRule]:
    """Register the rule that names the kernel class of layers of ``ops``."""

    def wrap(rule: ClassRule) -> ClassRule:
        for op in ops:
            if op in _CLASSES:
                raise ValueError(f"a kernel class for op={op!r} is already registered")
            _CLASSES[op] = rule
        return rule

    return wrap


def _always(kernel_cls: str, *ops: str) -> None:
    """Layers of ``ops`` always run as ``kernel_cls``."""
    if kernel_cls not in KERNEL_CLASSES:
        raise ValueError(f"kernel class {kernel_cls!r} is not one of {list(KERNEL_CLASSES)}")
    register_class(*ops)(lambda spec: kernel_cls)


@register_class(S.CONV2D)
def _conv_class(spec: LayerSpec) -> str:
    c = spec.in_channels
    if spec.groups == 1:
        return "pointwise_conv" if spec.kernel_size == (1, 1) else "dense_conv"
    if spec.groups == c and spec.out_channels % c == 0:
        return "depthwise_conv"
    return "group_conv"


_always("linear", S.LINEAR)
_always("batchnorm", S.BATCHNORM2D)
_always("activation", *S.ACTIVATIONS)
# Windowed average, windowed max and global pooling run as different kernels
# (hw_profiles KERNEL_CLASSES says how they differ on a CPU).
_always("pooling", S.AVGPOOL2D)
_always("max_pooling", S.MAXPOOL2D)
_always("global_pooling", S.GLOBAL_AVGPOOL2D)
_always("elementwise", S.ADD, S.MUL, S.CHANNEL_SHUFFLE, S.CONCAT, S.SPLIT, S.FLATTEN, S.IDENTITY)


def kernel_class(spec: LayerSpec) -> str:
    try:
        rule = _CLASSES[spec.op]
    except KeyError:
        raise UnsupportedLayerError(
            f"no kernel class for op={spec.op!r} ({spec._who()}); known ops: {sorted(_CLASSES)}"
        ) from None
    return rule(spec)


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
    if (
        conv_dispatch == "pytorch_cpu"
        and spec.op == S.CONV2D
        and not pytorch_cpu_uses_onednn(spec, threads)
    ):
        return "native_conv"
    return cls
