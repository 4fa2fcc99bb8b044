"""Lowering an Architecture to ``costmodel.LayerSpec``s without touching torch.

Names and inputs follow the naming rule that ``costmodel.profile`` applies to
``searchspace.build(arch)``: a module call is named by its qualified module
name, the residual ``x + y`` by ``f"{block}.add"``; ``inputs`` are the
producing layers (``NETWORK_INPUT`` for the network input). The layer order is
the execution order of the built module's ``forward``.

The architecture's parts are read by attribute only: ``searchspace._arch``
calls these functions from its methods (``Architecture.lower``, the segments).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from costmodel import NETWORK_INPUT, LayerSpec, output_shape

if TYPE_CHECKING:
    from searchspace._arch import Architecture, Block, Head, Stem

Shape = tuple[int, ...]
SHUFFLE_BOTTLENECK = 4  # ShuffleNet V1 (Zhang et al., CVPR 2018, Sec. 3.2): mid = c / 4


class _Emitter:
    """Appends layers of one segment (stem, block or head) and tracks the current tensor."""

    __slots__ = ("prefix", "shape", "specs", "src")

    def __init__(self, prefix: str, shape: Shape, src: str, specs: list[LayerSpec]) -> None:
        self.prefix, self.shape, self.src, self.specs = prefix, shape, src, specs

    def emit(self, local: str, op: str, inputs: tuple[str, ...] | None = None, **kw: object) -> str:
        name = f"{self.prefix}.{local}" if self.prefix else local
        spec = LayerSpec(op, self.shape, name=name, inputs=inputs or (self.src,), **kw)  # type: ignore[arg-type]
        self.specs.append(spec)
        self.shape, self.src = output_shape(spec), name
        return name

    def conv(self, local: str, cout: int, k: int = 1, s: int = 1, g: int = 1) -> str:
        return self.emit(
            local, "conv2d", out_channels=cout, kernel_size=k, stride=s, padding=k // 2, groups=g
        )


def lower_stem(
    stem: Stem, shape: Shape, src: str, specs: list[LayerSpec], prefix: str = "stem"
) -> tuple[Shape, str]:
    e = _Emitter(prefix, shape, src, specs)
    e.conv("conv", stem.width, stem.kernel, stem.stride)
    e.emit("bn", "batchnorm2d")
    e.emit("act", stem.act)
    if stem.pool:
        e.emit("pool", "maxpool2d", kernel_size=3, stride=2, padding=1)
    return e.shape, e.src


def lower_block(
    b: Block, shape: Shape, src: str, specs: list[LayerSpec], prefix: str
) -> tuple[Shape, str]:
    e = _Emitter(prefix, shape, src, specs)
    cin = shape[1]
    if b.op == "ir":
        hidden = cin * b.expansion
        # MobileNetV2 (Sandler et al., CVPR 2018, Table 1): t = 1 has no expand.
        if b.expansion != 1:
            e.conv("expand", hidden)
            e.emit("expand_bn", "batchnorm2d")
            e.emit("expand_act", b.act)
        e.conv("dw", hidden, b.kernel, b.stride, hidden)
        e.emit("dw_bn", "batchnorm2d")
        e.emit("dw_act", b.act)
        e.conv("project", b.width)
        e.emit("project_bn", "batchnorm2d")
    elif b.op == "ds":
        e.conv("dw", cin, b.kernel, b.stride, cin)
        e.emit("dw_bn", "batchnorm2d")
        e.emit("dw_act", b.act)
        e.conv("pw", b.width)
        e.emit("pw_bn", "batchnorm2d")
        e.emit("pw_act", b.act)
    elif b.op == "conv":
        e.conv("conv", b.width, b.kernel, b.stride, b.groups)
        e.emit("bn", "batchnorm2d")
        e.emit("act", b.act)
    elif b.op == "sh":
        mid = b.width // SHUFFLE_BOTTLENECK
        e.conv("gconv1", mid, 1, 1, b.groups)
        e.emit("gconv1_bn", "batchnorm2d")
        e.emit("gconv1_act", b.act)
        e.emit("shuffle", "channel_shuffle", groups=b.groups)
        e.conv("dw", mid, b.kernel, b.stride, mid)
        e.emit("dw_bn", "batchnorm2d")
        e.conv("gconv2", b.width, 1, 1, b.groups)
        e.emit("gconv2_bn", "batchnorm2d")
    else:  # validated by Architecture
        raise ValueError(f"{prefix}: op={b.op!r} has no lowering")
    if b.residual(cin):
        e.emit("add", "add", inputs=(e.src, src), num_inputs=2)
    if b.op == "sh":
        e.emit("act", b.act)
    return e.shape, e.src


def lower_head(
    head: Head,
    num_classes: int,
    shape: Shape,
    src: str,
    specs: list[LayerSpec],
    prefix: str = "head",
) -> tuple[Shape, str]:
    e = _Emitter(prefix, shape, src, specs)
    if head.width:
        e.conv("conv", head.width)
        e.emit("bn", "batchnorm2d")
        e.emit("act", head.act)
    e.emit("pool", "global_avgpool2d")
    e.emit("flatten", "flatten")
    e.emit("fc", "linear", out_channels=num_classes, bias=True)
    return e.shape, e.src


def lower(arch: Architecture, batch: int = 1) -> tuple[LayerSpec, ...]:
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch={batch!r} must be an int >= 1")
    specs: list[LayerSpec] = []
    shape: Shape = (batch, *arch.input_shape)
    shape, src = lower_stem(arch.stem, shape, NETWORK_INPUT, specs)
    for i, stage in enumerate(arch.stages):
        for j, b in enumerate(stage):
            shape, src = lower_block(b, shape, src, specs, f"stages.{i}.blocks.{j}")
    lower_head(arch.head, arch.num_classes, shape, src, specs)
    return tuple(specs)
