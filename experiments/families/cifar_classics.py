"""CIFAR classics no fit and no modelling decision has seen, as the widely copied CIFAR code
(kuangliu/pytorch-cifar) writes them: ResNet (He et al., CVPR 2016) with 1x1-conv
shortcuts and an in-place ``out += shortcut``, MobileNet V1 (Howard et al., 2017) and
MobileNet V2 (Sandler et al., CVPR 2018) with ``F.relu`` calls and a 4x4 average pool.

Written after the CPU page-fault model was chosen, to check it on networks that played no
part in choosing it. Each public name without arguments builds one network;
``experiments/cifar_classics.txt`` lists them with their input shapes for
``python -m costmodel validate --networks``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu(out)


class ResNet(nn.Module):
    def __init__(
        self, blocks: tuple[int, ...], widths: tuple[int, ...], num_classes: int = 10
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        layers: list[nn.Module] = []
        cin = widths[0]
        for i, (n, w) in enumerate(zip(blocks, widths, strict=True)):
            for j in range(n):
                layers.append(BasicBlock(cin, w, 2 if i > 0 and j == 0 else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        out = F.adaptive_avg_pool2d(out, 1)
        return self.linear(out.view(out.size(0), -1))


class MobileNetV1(nn.Module):
    # (out channels, stride) of the 13 depthwise-separable blocks, CIFAR strides
    CFG = (
        (64, 1),
        (128, 2),
        (128, 1),
        (256, 2),
        (256, 1),
        (512, 2),
        (512, 1),
        (512, 1),
        (512, 1),
        (512, 1),
        (512, 1),
        (1024, 2),
        (1024, 1),
    )

    def __init__(self, width: float = 1.0, num_classes: int = 10) -> None:
        super().__init__()
        c0 = int(32 * width)
        self.conv1 = nn.Conv2d(3, c0, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c0)
        layers: list[nn.Module] = []
        cin = c0
        for cout, stride in self.CFG:
            cout = int(cout * width)
            layers += [
                nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
                nn.BatchNorm2d(cin),
                nn.ReLU(),
                nn.Conv2d(cin, cout, 1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
            ]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        out = F.avg_pool2d(out, 2)
        return self.linear(out.view(out.size(0), -1))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, expansion: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        mid = expansion * cin
        self.conv1 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride == 1 and cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return out + self.shortcut(x) if self.stride == 1 else out


class MobileNetV2(nn.Module):
    # (expansion, out channels, blocks, stride), CIFAR strides (first two stages at 32 x 32)
    CFG = (
        (1, 16, 1, 1),
        (6, 24, 2, 1),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    )

    def __init__(self, width: float = 1.0, num_classes: int = 10) -> None:
        super().__init__()
        c0 = int(32 * width)
        self.conv1 = nn.Conv2d(3, c0, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c0)
        layers: list[nn.Module] = []
        cin = c0
        for e, c, n, s in self.CFG:
            for j in range(n):
                layers.append(InvertedResidual(cin, int(c * width), e, s if j == 0 else 1))
                cin = int(c * width)
        self.layers = nn.Sequential(*layers)
        c_last = int(1280 * width) if width > 1.0 else 1280
        self.conv2 = nn.Conv2d(cin, c_last, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_last)
        self.linear = nn.Linear(c_last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        out = F.relu(self.bn2(self.conv2(out)))
        out = F.avg_pool2d(out, 4)
        return self.linear(out.view(out.size(0), -1))


def resnet18() -> nn.Module:
    return ResNet((2, 2, 2, 2), (64, 128, 256, 512))


def resnet20() -> nn.Module:
    return ResNet((3, 3, 3), (16, 32, 64))


def resnet32() -> nn.Module:
    return ResNet((5, 5, 5), (16, 32, 64))


def resnet56() -> nn.Module:
    return ResNet((9, 9, 9), (16, 32, 64))


def mobilenet_v1_x0_5() -> nn.Module:
    return MobileNetV1(0.5)


def mobilenet_v1_x1_0() -> nn.Module:
    return MobileNetV1(1.0)


def mobilenet_v2_x0_5() -> nn.Module:
    return MobileNetV2(0.5)


def mobilenet_v2_x0_75() -> nn.Module:
    return MobileNetV2(0.75)


def mobilenet_v2_x1_0() -> nn.Module:
    return MobileNetV2(1.0)


def mobilenet_v2_x1_4() -> nn.Module:
    return MobileNetV2(1.4)
