"""Once-for-all MobileNetV3 subnets (Cai et al., ICLR 2020), width 1.0.

The network is the static ``MobileNetV3`` that OFA's
``OFAMobileNetV3.get_active_subnet()`` returns (mit-han-lab/once-for-all,
ofa/imagenet_classification/elastic_nn/networks/ofa_mbv3.py,
networks/mobilenet_v3.py, ofa/utils/layers.py and pytorch_modules.py); module
names are OFA's:

- ``first_conv``: 3x3 conv stride 2 to 16 channels (no bias), BN, h_swish;
- ``blocks.0``: MBConv 16 -> 16, 3x3 depthwise, expand 1 (no expansion conv),
  ReLU, plus the identity shortcut;
- five stages of d in {2, 3, 4} blocks (``STAGES``); the first block of a stage
  has the stage's stride. Each block is an MBConv with kernel k in {3, 5, 7} and
  expand ratio e in {3, 4, 6}: 1x1 expand to mid = make_divisible(round(cin *
  e), 8) + BN + act, kxk depthwise (padding k // 2) + BN + act, [SE],
  1x1 project + BN, and ``conv(x) + x`` when stride is 1 and channels match;
- SE (``SEModule``): global average pool, 1x1 conv to make_divisible(mid // 4,
  8) with bias, ReLU, 1x1 conv back to mid with bias, h_sigmoid, ``x * gate``;
- ``final_expand_layer``: 1x1 conv to 960 + BN + h_swish; global average pool;
  ``feature_mix_layer``: 1x1 conv to 1280 without BN or bias + h_swish;
  ``view(N, -1)``; ``classifier``: dropout (the identity at inference), Linear.

Deliberate differences from OFA's code, none of which changes a parameter or a
count of MACs: OFA's ``Hswish`` computes ``x * relu6(x + 3) / 6`` and
``Hsigmoid`` ``relu6(x + 3) / 6`` as separate eager kernels (4 and 3), and its
global pools run ``x.mean(3).mean(2)`` (2 kernels); here they are
``nn.Hardswish``, ``nn.Hardsigmoid`` and one ``mean((2, 3))``, the fused
forms PyTorch provides. ``lower`` costs this module; ``eager_layers`` costs OFA's
own code (each h_swish four element-wise kernels over the whole tensor, so
about 4.5x the memory traffic), and ``eager_kernels`` counts what it launches.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

import torch
from torch import nn

from costmodel import LayerSpec
from searchspace._graph import NETWORK_INPUT, Layers, Tensor

# (output channels, stride of the first block, activation, squeeze-and-excitation) per
# stage: OFAMobileNetV3's base_stage_width[2:7], stride_stages[1:], act_stages[1:],
# se_stages[1:].
STAGES: tuple[tuple[int, int, str, bool], ...] = (
    (24, 2, "relu", False),
    (40, 2, "relu", True),
    (80, 2, "hardswish", False),
    (112, 1, "hardswish", True),
    (160, 2, "hardswish", True),
)
KERNELS = (3, 5, 7)
EXPANDS = (3, 4, 6)
DEPTHS = (2, 3, 4)
SLOTS_PER_STAGE = max(DEPTHS)  # OFA and HELP list 4 slots per stage, 20 in all
FIRST_WIDTH = 16
FINAL_EXPAND_WIDTH = 960
LAST_WIDTH = 1280
SE_REDUCTION = 4
CHANNEL_DIVISIBLE = 8
_DEFAULT_CLASSES = 1000
_STRING = re.compile(r"ofa:r=([0-9]+):ks=([0-9-]+):e=([0-9-]+):d=([0-9-]+)(?::n=([0-9]+))?")


def make_divisible(v: float, divisor: int = CHANNEL_DIVISIBLE) -> int:
    """OFA's (and TF-slim MobileNet's) rounding to a multiple of ``divisor``, never down by >10%."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


@dataclass(frozen=True)
class OFANet:
    """One subnet: resolution, depth per stage and (kernel, expand) of each active block.

    ``ks`` and ``e`` list the active blocks only, stage after stage (``sum(d)``
    entries): a subnet does not depend on the values of inactive slots.
    """

    resolution: int
    ks: tuple[int, ...]
    e: tuple[int, ...]
    d: tuple[int, ...]
    num_classes: int = _DEFAULT_CLASSES

    def __post_init__(self) -> None:
        for f in ("ks", "e", "d"):
            object.__setattr__(self, f, tuple(getattr(self, f)))
        r = self.resolution
        if not isinstance(r, int) or isinstance(r, bool) or r < 32:
            raise ValueError(f"resolution={r!r} must be an int >= 32 (the network strides by 32)")
        if len(self.d) != len(STAGES) or any(d not in DEPTHS for d in self.d):
            raise ValueError(f"d={self.d!r} must give {len(STAGES)} depths, each one of {DEPTHS}")
        blocks = sum(self.d)
        for name, vals, allowed in (("ks", self.ks, KERNELS), ("e", self.e, EXPANDS)):
            if len(vals) != blocks:
                raise ValueError(
                    f"{name}={vals!r} must have sum(d)={blocks} entries, one per "
                    f"active block, not {len(vals)}"
                )
            bad = [v for v in vals if v not in allowed]
            if bad:
                raise ValueError(f"{name}={vals!r}: {bad[0]!r} is not one of {allowed}")
        n = self.num_classes
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"num_classes={n!r} must be an int >= 1")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, self.resolution, self.resolution)

    def stage_blocks(self) -> list[list[tuple[int, int]]]:
        """(kernel, expand) of the active blocks of every stage."""
        out, i = [], 0
        for depth in self.d:
            out.append(list(zip(self.ks[i : i + depth], self.e[i : i + depth], strict=True)))
            i += depth
        return out

    # -- encoding -------------------------------------------------------------
    def to_string(self) -> str:
        """``ofa:r=<res>:ks=<k>-...:e=<e>-...:d=<d>-...`` (``:n=<classes>`` unless 1000)."""

        def join(v: tuple[int, ...]) -> str:
            return "-".join(map(str, v))

        s = f"ofa:r={self.resolution}:ks={join(self.ks)}:e={join(self.e)}:d={join(self.d)}"
        return s if self.num_classes == _DEFAULT_CLASSES else f"{s}:n={self.num_classes}"

    __str__ = to_string

    @classmethod
    def from_string(cls, s: str) -> OFANet:
        m = _STRING.fullmatch(s) if isinstance(s, str) else None
        if m is None:
            raise ValueError(
                f"OFA string {s!r} must look like 'ofa:r=224:ks=3-5-...:e=4-6-...:d=2-3-4-2-3'"
            )
        r, ks, e, d, n = m.groups()
        try:
            net = cls(int(r), _ints(ks), _ints(e), _ints(d), int(n) if n else _DEFAULT_CLASSES)
        except ValueError as err:
            raise ValueError(f"OFA string {s!r}: {err}") from None
        if net.to_string() != s:
            raise ValueError(f"OFA string {s!r} is not canonical: write {net.to_string()!r}")
        return net

    @classmethod
    def from_help_row(cls, row: Mapping[str, str]) -> OFANet:
        """From a row of HELP's OFA latency table: ``r``, 20-slot ``ks20`` / ``e20``, ``d5``."""
        missing = [c for c in ("r", "ks20", "e20", "d5") if c not in row]
        if missing:
            raise ValueError(f"row lacks column(s) {missing} (columns: {sorted(row)})")
        d = _ints(row["d5"])
        ks20, e20 = _ints(row["ks20"]), _ints(row["e20"])
        slots = SLOTS_PER_STAGE * len(STAGES)
        if len(ks20) != slots or len(e20) != slots:
            raise ValueError(
                f"ks20={row['ks20']!r} and e20={row['e20']!r} must list {slots} slots each"
            )
        active = [s * SLOTS_PER_STAGE + i for s, depth in enumerate(d) for i in range(depth)]
        return cls(int(row["r"]), tuple(ks20[i] for i in active), tuple(e20[i] for i in active), d)

    # -- derived ----------------------------------------------------------------
    def lower(self, batch: int = 1) -> tuple[LayerSpec, ...]:
        """The layers in execution order, named as ``profile(self.build())`` names them."""
        if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
            raise ValueError(f"batch={batch!r} must be an int >= 1")
        net = Layers()
        x = Tensor(NETWORK_INPUT, (batch, *self.input_shape))
        x = net.conv("first_conv.conv", x, FIRST_WIDTH, 3, 2)
        x = net.emit("first_conv.bn", "batchnorm2d", x)
        x = net.emit("first_conv.act", "hardswish", x)
        x = _lower_mbconv(net, "blocks.0", x, FIRST_WIDTH, 3, 1, 1, "relu", False)
        idx = 1
        for (width, stride, act, se), blocks in zip(STAGES, self.stage_blocks(), strict=True):
            for i, (k, e) in enumerate(blocks):
                x = _lower_mbconv(
                    net, f"blocks.{idx}", x, width, k, stride if i == 0 else 1, e, act, se
                )
                idx += 1
        x = net.conv("final_expand_layer.conv", x, FINAL_EXPAND_WIDTH)
        x = net.emit("final_expand_layer.bn", "batchnorm2d", x)
        x = net.emit("final_expand_layer.act", "hardswish", x)
        x = net.emit("global_avg_pool.global_avgpool2d", "global_avgpool2d", x)
        x = net.conv("feature_mix_layer.conv", x, LAST_WIDTH)
        x = net.emit("feature_mix_layer.act", "hardswish", x)
        x = net.emit("flatten", "flatten", x)
        x = net.emit("classifier.dropout", "identity", x)
        net.emit("classifier.linear", "linear", x, out_channels=self.num_classes, bias=True)
        return tuple(net.specs)

    def build(self) -> nn.Module:
        """The subnet as OFA builds it (PyTorch default init, training mode)."""
        blocks: list[nn.Module] = [
            _ResidualBlock(_MBConv(FIRST_WIDTH, FIRST_WIDTH, 3, 1, 1, "relu", False), True)
        ]
        cin = FIRST_WIDTH
        for (width, stride, act, se), stage in zip(STAGES, self.stage_blocks(), strict=True):
            for i, (k, e) in enumerate(stage):
                s = stride if i == 0 else 1
                blocks.append(
                    _ResidualBlock(_MBConv(cin, width, k, s, e, act, se), s == 1 and cin == width)
                )
                cin = width
        return MobileNetV3(blocks, cin, self.num_classes)

    def eager_layers(self, batch: int = 1) -> tuple[LayerSpec, ...]:
        """The layers OFA's own eager code runs, named as ``profile`` names them there.

        OFA's ``Hswish`` is ``x * relu6(x + 3) / 6`` and its ``Hsigmoid``
        ``relu6(x + 3) / 6``: one element-wise layer per operator. The global
        pool's second mean, over a (N, C, H) tensor, is left to
        ``eager_extra_kernels``.
        """
        renamed: dict[str, str] = {}
        out: list[LayerSpec] = []
        for spec in self.lower(batch):
            inputs = tuple(renamed.get(i, i) for i in spec.inputs)
            if spec.op not in _OFA_HARD_ACTIVATIONS:
                out.append(replace(spec, inputs=inputs))
                continue
            renamed[spec.name] = _lower_hard_activation(out, spec, inputs)
        return tuple(out)

    def eager_extra_kernels(self) -> int:
        """Kernels OFA's eager code launches that no layer of ``eager_layers`` stands for:
        each global pool (``x.mean(3).mean(2)``) launches a second one."""
        return sum(1 for s in self.lower(1) if s.op == "global_avgpool2d")

    def eager_kernels(self) -> int:
        """Kernels OFA's own eager code launches for one forward pass (see the module doc):
        each of ``eager_layers`` except views, plus ``eager_extra_kernels``."""
        launched = sum(1 for s in self.eager_layers(1) if s.op not in ("flatten", "identity"))
        return launched + self.eager_extra_kernels()


_OFA_HARD_ACTIVATIONS = ("hardswish", "hardsigmoid")


def _lower_hard_activation(out: list[LayerSpec], spec: LayerSpec, inputs: tuple[str, ...]) -> str:
    """Append OFA's h_swish / h_sigmoid as its element-wise kernels; return the last name."""
    n, shape = spec.name, spec.in_shape
    out.append(LayerSpec("add", shape, name=f"{n}.add", inputs=inputs))  # x + 3
    out.append(LayerSpec("relu6", shape, name=f"{n}.relu6", inputs=(f"{n}.add",)))
    last = f"{n}.relu6"
    if spec.op == "hardswish":  # x * relu6(x + 3)
        out.append(LayerSpec("mul", shape, name=f"{n}.mul", inputs=(inputs[0], last), num_inputs=2))
        last = f"{n}.mul"
    out.append(LayerSpec("mul", shape, name=f"{n}.truediv", inputs=(last,)))  # / 6
    return f"{n}.truediv"


def _ints(text: str) -> tuple[int, ...]:
    parts = text.split("-")
    if not all(re.fullmatch("[0-9]+", p) for p in parts):
        raise ValueError(f"{text!r} must be integers separated by '-'")
    return tuple(int(p) for p in parts)


def _mid(cin: int, e: int) -> int:
    # DynamicMBConvLayer.active_middle_channel: make_divisible(round(cin * e), 8)
    return make_divisible(round(cin * e))


def _lower_mbconv(
    net: Layers, p: str, x: Tensor, cout: int, k: int, s: int, e: int, act: str, se: bool
) -> Tensor:
    src, cin = x, x.shape[1]
    mid = _mid(cin, e) if e != 1 else cin
    if e != 1:
        x = net.conv(f"{p}.conv.inverted_bottleneck.conv", x, mid)
        x = net.emit(f"{p}.conv.inverted_bottleneck.bn", "batchnorm2d", x)
        x = net.emit(f"{p}.conv.inverted_bottleneck.act", act, x)
    x = net.conv(f"{p}.conv.depth_conv.conv", x, mid, k, s, groups=mid)
    x = net.emit(f"{p}.conv.depth_conv.bn", "batchnorm2d", x)
    x = net.emit(f"{p}.conv.depth_conv.act", act, x)
    if se:
        q = f"{p}.conv.depth_conv.se"
        g = net.emit(f"{q}.global_avgpool2d", "global_avgpool2d", x)
        g = net.conv(f"{q}.fc.reduce", g, make_divisible(mid // SE_REDUCTION), bias=True)
        g = net.emit(f"{q}.fc.relu", "relu", g, inplace=True)
        g = net.conv(f"{q}.fc.expand", g, mid, bias=True)
        g = net.emit(f"{q}.fc.h_sigmoid", "hardsigmoid", g)
        x = net.emit(f"{q}.mul", "mul", x, g, num_inputs=2, other_shape=g.shape)
    x = net.conv(f"{p}.conv.point_linear.conv", x, cout)
    x = net.emit(f"{p}.conv.point_linear.bn", "batchnorm2d", x)
    if s == 1 and cin == cout:
        x = net.emit(f"{p}.add", "add", x, src, num_inputs=2)  # conv(x) + shortcut(x)
    return x


# --- the torch modules (OFA's structure and names) ------------------------------------------

_ACTS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "hardswish": nn.Hardswish}


def _conv(
    cin: int, cout: int, k: int = 1, s: int = 1, groups: int = 1, bias: bool = False
) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=s, padding=k // 2, groups=groups, bias=bias)


class _GlobalAvgPool(nn.Module):
    """OFA's MyGlobalAvgPool2d(keep_dim=True), as one mean over (H, W)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3), keepdim=True)


class _SE(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        mid = make_divisible(channels // SE_REDUCTION)
        self.fc = nn.Sequential()
        self.fc.add_module("reduce", _conv(channels, mid, bias=True))
        self.fc.add_module("relu", nn.ReLU(inplace=True))
        self.fc.add_module("expand", _conv(mid, channels, bias=True))
        self.fc.add_module("h_sigmoid", nn.Hardsigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x.mean((2, 3), keepdim=True))


class _MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, s: int, e: int, act: str, se: bool) -> None:
        super().__init__()
        mid = _mid(cin, e) if e != 1 else cin
        self.inverted_bottleneck: nn.Sequential | None = None
        if e != 1:
            self.inverted_bottleneck = nn.Sequential()
            self.inverted_bottleneck.add_module("conv", _conv(cin, mid))
            self.inverted_bottleneck.add_module("bn", nn.BatchNorm2d(mid))
            self.inverted_bottleneck.add_module("act", _ACTS[act]())
        self.depth_conv = nn.Sequential()
        self.depth_conv.add_module("conv", _conv(mid, mid, k, s, groups=mid))
        self.depth_conv.add_module("bn", nn.BatchNorm2d(mid))
        self.depth_conv.add_module("act", _ACTS[act]())
        if se:
            self.depth_conv.add_module("se", _SE(mid))
        self.point_linear = nn.Sequential()
        self.point_linear.add_module("conv", _conv(mid, cout))
        self.point_linear.add_module("bn", nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inverted_bottleneck is not None:
            x = self.inverted_bottleneck(x)
        return self.point_linear(self.depth_conv(x))


class _ResidualBlock(nn.Module):
    def __init__(self, conv: _MBConv, shortcut: bool) -> None:
        super().__init__()
        self.conv = conv
        self.has_shortcut = shortcut  # OFA's IdentityLayer shortcut, or None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + x if self.has_shortcut else self.conv(x)


class _ConvLayer(nn.Module):
    """OFA's ConvLayer, ops order weight-bn-act (no BN in the feature mix layer)."""

    def __init__(self, cin: int, cout: int, k: int, s: int, bn: bool) -> None:
        super().__init__()
        self.conv = _conv(cin, cout, k, s)
        self.bn = nn.BatchNorm2d(cout) if bn else None
        self.act = nn.Hardswish()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.act(x)


class _Classifier(nn.Module):
    """OFA's LinearLayer with dropout_rate=0.1 (OFAMobileNetV3's default)."""

    def __init__(self, cin: int, num_classes: int) -> None:
        super().__init__()
        self.dropout = nn.Dropout(0.1)
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(x))


class MobileNetV3(nn.Module):
    def __init__(self, blocks: list[nn.Module], cin: int, num_classes: int) -> None:
        super().__init__()
        self.first_conv = _ConvLayer(3, FIRST_WIDTH, 3, 2, bn=True)
        self.blocks = nn.ModuleList(blocks)
        self.final_expand_layer = _ConvLayer(cin, FINAL_EXPAND_WIDTH, 1, 1, bn=True)
        self.global_avg_pool = _GlobalAvgPool()
        self.feature_mix_layer = _ConvLayer(FINAL_EXPAND_WIDTH, LAST_WIDTH, 1, 1, bn=False)
        self.classifier = _Classifier(LAST_WIDTH, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first_conv(x)
        for block in self.blocks:
            x = block(x)
        x = self.feature_mix_layer(self.global_avg_pool(self.final_expand_layer(x)))
        return self.classifier(x.view(x.size(0), -1))
