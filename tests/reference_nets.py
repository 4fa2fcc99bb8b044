"""Hand-written reference networks for the differential tests and experiments/.

torchvision is not a dependency (and must not be installed here), so the two
ImageNet models follow torchvision's module structure and names exactly; their
parameter counts match torchvision's published metadata (MobileNetV2 3,504,872;
ResNet-18 11,689,512). Only modules that the cost model knows are used, plus
``x + y`` for residual adds; OFA's h_swish and h_sigmoid are written as OFA writes
them, with scalar arithmetic. ShuffleNet V2 and FBNet, written with the functional
code of their public implementations, are in experiments/families/published_cnns.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class OFAHswish(nn.Module):
    """OFA's Hswish (ofa/utils/layers.py), as many MobileNetV3 ports write it: 4 kernels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * F.relu6(x + 3.0, inplace=True) / 6.0


class OFAHsigmoid(nn.Module):
    """OFA's Hsigmoid: 3 kernels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(x + 3.0, inplace=True) / 6.0


def _make_divisible(v: float, divisor: int = 8) -> int:
    # torchvision/models/_utils.py: round to a multiple of 8, never down by more than 10%.
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class ConvBNActivation(nn.Sequential):
    """torchvision's Conv2dNormActivation with ReLU6: conv (no bias), BN, ReLU6."""

    def __init__(
        self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1
    ) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """MobileNetV2 block (Sandler et al., CVPR 2018, Table 1): expand, depthwise, project."""

    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = round(cin * expand_ratio)
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNActivation(cin, hidden, kernel=1))
        layers += [
            ConvBNActivation(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision.models.mobilenet_v2(width_mult=1.0): 3,504,872 params."""

    # t, c, n, s (expansion, output channels, repeats, first stride): paper Table 2
    SETTINGS = (
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    )

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0) -> None:
        super().__init__()
        cin = _make_divisible(32 * width_mult)
        last = _make_divisible(1280 * max(1.0, width_mult))
        features: list[nn.Module] = [ConvBNActivation(3, cin, stride=2)]
        for t, c, n, s in self.SETTINGS:
            cout = _make_divisible(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        features.append(ConvBNActivation(cin, last, kernel=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = F.adaptive_avg_pool2d(x, (1, 1))
        x = torch.flatten(x, 1)
        return self.classifier(x)


class BasicBlock(nn.Module):
    """ResNet basic block (He et al., CVPR 2016), torchvision layout: one ReLU called twice."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class ResNet18(nn.Module):
    """torchvision.models.resnet18(): 11,689,512 params."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, cout in enumerate((64, 128, 256, 512), start=1):
            stride = 1 if i == 1 else 2
            setattr(
                self,
                f"layer{i}",
                nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout)),
            )
            cin = cout
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


class CifarNet(nn.Module):
    """A small CIFAR-10 convnet: three conv-BN-ReLU-pool stages and a classifier."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for cout in (32, 64, 128):
            layers += [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.features(x))))


class ShuffleUnit(nn.Module):
    """ShuffleNet V1 unit (Zhang et al., CVPR 2018, Fig. 2b): 1x1 group conv, shuffle,
    3x3 depthwise, 1x1 group conv, residual add. Stride-2 units drop the shortcut
    (the paper concatenates an avg-pooled shortcut; concat has no formula yet)."""

    def __init__(
        self, cin: int, cout: int, stride: int, groups: int, first_groups: int | None = None
    ) -> None:
        super().__init__()
        mid = cout // 4
        g1 = groups if first_groups is None else first_groups
        self.residual = stride == 1 and cin == cout
        self.gconv1 = nn.Conv2d(cin, mid, 1, groups=g1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.relu1 = nn.ReLU(inplace=True)
        self.shuffle = nn.ChannelShuffle(g1)
        self.dwconv = nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.gconv2 = nn.Conv2d(mid, cout, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.shuffle(self.relu1(self.bn1(self.gconv1(x))))
        out = self.bn3(self.gconv2(self.bn2(self.dwconv(out))))
        if self.residual:
            out = out + x
        return self.relu2(out)


class ShuffleNetV1Like(nn.Module):
    """ShuffleNet V1 (g=3, 1x) layout: 24-channel stem, stages of 240/480/960 channels
    with 4/8/4 units; see ``ShuffleUnit`` for the one deviation from the paper."""

    def __init__(
        self,
        num_classes: int = 1000,
        groups: int = 3,
        channels: tuple[int, ...] = (240, 480, 960),
        repeats: tuple[int, ...] = (4, 8, 4),
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 24, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages: list[nn.Module] = []
        cin = 24
        for i, (cout, n) in enumerate(zip(channels, repeats, strict=True)):
            units = []
            for j in range(n):
                # paper: the first 1x1 conv of stage 2 is not grouped (24 input channels)
                first = 1 if i == 0 and j == 0 else None
                units.append(ShuffleUnit(cin, cout, 2 if j == 0 else 1, groups, first))
                cin = cout
            stages.append(nn.Sequential(*units))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.pool(self.stages(x))
        return self.fc(x.view(x.size(0), -1))


# name -> (factory, ImageNet-style input shape used in experiments)
REFERENCE_NETS: dict[str, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    "mobilenet_v2": (MobileNetV2, (1, 3, 224, 224)),
    "resnet18": (ResNet18, (1, 3, 224, 224)),
    "cifar_net": (CifarNet, (1, 3, 32, 32)),
    "shufflenet_v1_like": (ShuffleNetV1Like, (1, 3, 224, 224)),
}
