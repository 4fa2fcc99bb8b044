"""Published CNN families the latency model was never fitted or checked on, written the way
their public code writes them: FBNet (Wu et al., CVPR 2019) blocks at CIFAR size with FBNet's
own ChannelShuffle (an ``assert`` on traced sizes, which torch.fx cannot trace), and ShuffleNet
V2 (Ma et al., ECCV 2018) as torchvision writes it (chunk, cat, view/transpose shuffle) and as
CIFAR code writes it (channel slices, reshape/permute shuffle).

Each public name without arguments builds one network; ``experiments/unseen_families.txt``
lists them with their input shapes for ``python -m costmodel validate --networks``.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import torch
from torch import nn

# --- FBNet (HW-NAS-Bench's CIFAR version of the FBNet space) -------------------------------

# (kernel, expansion, groups) of the nine candidate ops; None is "skip".
FBNET_OPS: tuple[tuple[int, int, int] | None, ...] = (
    (3, 1, 1),
    (3, 1, 2),
    (3, 3, 1),
    (3, 6, 1),
    (5, 1, 1),
    (5, 1, 2),
    (5, 3, 1),
    (5, 6, 1),
    None,
)
# 22 searchable layers: output channels and stride (CIFAR: three stride-2 stages, 32 -> 4).
FBNET_CHANNELS = (
    16,
    24,
    24,
    24,
    24,
    32,
    32,
    32,
    32,
    64,
    64,
    64,
    64,
    112,
    112,
    112,
    112,
    184,
    184,
    184,
    184,
    352,
)
FBNET_STRIDES = (1, 1, 1, 1, 1, 2, 1, 1, 1, 2, 1, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1)


class ChannelShuffle(nn.Module):
    """As FBNet's code (maskrcnn-benchmark, mobile-vision) writes it."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, C, H, W = x.size()
        g = self.groups
        assert C % g == 0, f"Incompatible group size {g} for input channel {C}"
        return x.view(N, g, int(C / g), H, W).permute(0, 2, 1, 3, 4).contiguous().view(N, C, H, W)


class FBNetBlock(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, e: int, g: int, stride: int) -> None:
        super().__init__()
        mid = cin * e
        self.pw = nn.Sequential(
            nn.Conv2d(cin, mid, 1, groups=g, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True)
        )
        self.shuffle = ChannelShuffle(g) if g > 1 else nn.Identity()
        self.dw = nn.Sequential(
            nn.Conv2d(mid, mid, k, stride, k // 2, groups=mid, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
        )
        self.pwl = nn.Sequential(
            nn.Conv2d(mid, cout, 1, groups=g, bias=False), nn.BatchNorm2d(cout)
        )
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pwl(self.dw(self.shuffle(self.pw(x))))
        return x + y if self.residual else y


class FBNet(nn.Module):
    def __init__(self, ops: tuple[int, ...], num_classes: int = 100) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True)
        )
        layers: list[nn.Module] = []
        cin = 16
        for op, cout, stride in zip(ops, FBNET_CHANNELS, FBNET_STRIDES, strict=True):
            choice = FBNET_OPS[op]
            if choice is None:
                layers.append(nn.Identity())
            else:
                layers.append(FBNetBlock(cin, cout, *choice, stride))
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Conv2d(cin, 1504, 1, bias=False), nn.BatchNorm2d(1504), nn.ReLU(inplace=True)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(1504, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.head(self.layers(self.stem(x)))).flatten(1))


def fbnet_ops(seed: int) -> tuple[int, ...]:
    """A uniform draw of the 22 ops; "skip" only where the shape does not change."""
    rng = random.Random(seed)
    ops, cin = [], 16
    for cout, stride in zip(FBNET_CHANNELS, FBNET_STRIDES, strict=True):
        can_skip = cin == cout and stride == 1
        ops.append(rng.randrange(len(FBNET_OPS) if can_skip else len(FBNET_OPS) - 1))
        cin = cout
    return tuple(ops)


# --- ShuffleNet V2 ---------------------------------------------------------------------------


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    # torchvision/models/shufflenetv2.py, as written there
    batchsize, num_channels, height, width = x.size()
    channels_per_group = num_channels // groups
    x = x.view(batchsize, groups, channels_per_group, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(batchsize, num_channels, height, width)


def _dw_bn(channels: int, stride: int) -> list[nn.Module]:
    return [
        nn.Conv2d(channels, channels, 3, stride, 1, groups=channels, bias=False),
        nn.BatchNorm2d(channels),
    ]


def _pw_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class TorchvisionUnit(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        half = oup // 2
        self.branch1 = (
            nn.Sequential(*_dw_bn(inp, stride), *_pw_bn_relu(inp, half))
            if stride > 1
            else nn.Sequential()
        )
        self.branch2 = nn.Sequential(
            *_pw_bn_relu(inp if stride > 1 else half, half),
            *_dw_bn(half, stride),
            *_pw_bn_relu(half, half),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class SliceUnit(nn.Module):
    """The stride-1 unit as CIFAR code writes it: channel slices, reshape/permute shuffle."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.branch = nn.Sequential(
            *_pw_bn_relu(half, half), *_dw_bn(half, 1), *_pw_bn_relu(half, half)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.size(1) // 2
        out = torch.cat([x[:, :c, :, :], self.branch(x[:, c:, :, :])], 1)
        n, ch, h, w = out.size()
        return out.reshape(n, 2, ch // 2, h, w).permute(0, 2, 1, 3, 4).reshape(n, ch, h, w)


# torchvision's stage widths per width multiplier (Ma et al., Table 5).
SHUFFLENET_V2_WIDTHS = {
    "x0_5": (24, 48, 96, 192, 1024),
    "x1_0": (24, 116, 232, 464, 1024),
    "x1_5": (24, 176, 352, 704, 1024),
    "x2_0": (24, 244, 488, 976, 2048),
}


class ShuffleNetV2(nn.Module):
    def __init__(self, widths: tuple[int, ...], cifar: bool, num_classes: int = 1000) -> None:
        super().__init__()
        stride = 1 if cifar else 2
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, widths[0], 3, stride, 1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        self.maxpool = nn.Identity() if cifar else nn.MaxPool2d(3, 2, 1)
        stages: list[nn.Module] = []
        cin = widths[0]
        for repeats, cout in zip((4, 8, 4), widths[1:4], strict=True):
            units: list[nn.Module] = [TorchvisionUnit(cin, cout, 2)]
            units += [
                SliceUnit(cout) if cifar else TorchvisionUnit(cout, cout, 1)
                for _ in range(repeats - 1)
            ]
            stages.append(nn.Sequential(*units))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.conv5 = nn.Sequential(*_pw_bn_relu(cin, widths[-1]))
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv5(self.stages(self.maxpool(self.conv1(x))))
        return self.fc(x.mean([2, 3]))


def _factories() -> dict[str, Callable[[], nn.Module]]:
    made: dict[str, Callable[[], nn.Module]] = {}
    for seed in range(12):
        made[f"fbnet_{seed}"] = lambda s=seed: FBNet(fbnet_ops(s)).eval()
    for name, widths in SHUFFLENET_V2_WIDTHS.items():
        made[f"shufflenet_v2_{name}"] = lambda w=widths: ShuffleNetV2(w, cifar=False).eval()
        made[f"shufflenet_v2_cifar_{name}"] = lambda w=widths: ShuffleNetV2(
            w, cifar=True, num_classes=10
        ).eval()
    return made


globals().update(_factories())
