"""The torch modules a built architecture is made of.

This file imports only torch: ``export_source`` copies these definitions
verbatim into the standalone file it writes, so the built module and the
exported one are the same code. The modules used are exactly those of the
naming rule (Conv2d, BatchNorm2d, activations, MaxPool2d, AdaptiveAvgPool2d(1),
ChannelShuffle, Flatten, Linear) plus ``x + y`` for residual adds; layer
order and names match ``searchspace._lower``.
"""

import torch
from torch import nn

ACTIVATION_MODULES: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "hardswish": nn.Hardswish,
    "silu": nn.SiLU,
}
SHUFFLE_BOTTLENECK = 4  # ShuffleNet V1: bottleneck width = output width / 4


def conv(cin: int, cout: int, k: int = 1, s: int = 1, g: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=s, padding=k // 2, groups=g, bias=False)


class Stem(nn.Module):
    def __init__(
        self, cin: int, kernel: int, width: int, stride: int, act: str, pool: bool
    ) -> None:
        super().__init__()
        self.conv = conv(cin, width, kernel, stride)
        self.bn = nn.BatchNorm2d(width)
        self.act = ACTIVATION_MODULES[act]()
        self.has_pool = pool
        if pool:
            self.pool = nn.MaxPool2d(3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn(self.conv(x)))
        if self.has_pool:
            x = self.pool(x)
        return x


class Block(nn.Module):
    """One block: a chain of modules, an optional residual add, then ``post`` modules."""

    def __init__(
        self,
        op: str,
        cin: int,
        kernel: int,
        width: int,
        stride: int,
        act: str,
        expansion: int = 1,
        groups: int = 1,
    ) -> None:
        super().__init__()
        act_cls = ACTIVATION_MODULES[act]
        chain: list[tuple[str, nn.Module]] = []
        post: list[tuple[str, nn.Module]] = []
        if op == "ir":  # MobileNetV2 inverted residual, linear bottleneck
            hidden = cin * expansion
            if expansion != 1:
                chain += [
                    ("expand", conv(cin, hidden)),
                    ("expand_bn", nn.BatchNorm2d(hidden)),
                    ("expand_act", act_cls()),
                ]
            chain += [
                ("dw", conv(hidden, hidden, kernel, stride, hidden)),
                ("dw_bn", nn.BatchNorm2d(hidden)),
                ("dw_act", act_cls()),
                ("project", conv(hidden, width)),
                ("project_bn", nn.BatchNorm2d(width)),
            ]
        elif op == "ds":  # depthwise-separable (MobileNetV1)
            chain += [
                ("dw", conv(cin, cin, kernel, stride, cin)),
                ("dw_bn", nn.BatchNorm2d(cin)),
                ("dw_act", act_cls()),
                ("pw", conv(cin, width)),
                ("pw_bn", nn.BatchNorm2d(width)),
                ("pw_act", act_cls()),
            ]
        elif op == "conv":  # standard (groups = 1) or group convolution
            chain += [
                ("conv", conv(cin, width, kernel, stride, groups)),
                ("bn", nn.BatchNorm2d(width)),
                ("act", act_cls()),
            ]
        elif op == "sh":  # ShuffleNet V1 unit (no concat shortcut on stride 2)
            mid = width // SHUFFLE_BOTTLENECK
            chain += [
                ("gconv1", conv(cin, mid, 1, 1, groups)),
                ("gconv1_bn", nn.BatchNorm2d(mid)),
                ("gconv1_act", act_cls()),
                ("shuffle", nn.ChannelShuffle(groups)),
                ("dw", conv(mid, mid, kernel, stride, mid)),
                ("dw_bn", nn.BatchNorm2d(mid)),
                ("gconv2", conv(mid, width, 1, 1, groups)),
                ("gconv2_bn", nn.BatchNorm2d(width)),
            ]
            post.append(("act", act_cls()))
        else:
            raise ValueError(f"op={op!r} is not one of ['ir', 'ds', 'conv', 'sh']")
        for name, module in chain + post:
            self.add_module(name, module)
        self.chain = tuple(name for name, _ in chain)
        self.post = tuple(name for name, _ in post)
        self.residual = stride == 1 and cin == width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for name in self.chain:
            y = getattr(self, name)(y)
        if self.residual:
            y = y + x
        for name in self.post:
            y = getattr(self, name)(y)
        return y


class Stage(nn.Module):
    def __init__(self, blocks: list[Block]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class Head(nn.Module):
    def __init__(self, cin: int, width: int, act: str, num_classes: int) -> None:
        super().__init__()
        self.has_conv = width > 0
        if width:
            self.conv = conv(cin, width)
            self.bn = nn.BatchNorm2d(width)
            self.act = ACTIVATION_MODULES[act]()
            cin = width
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.has_conv:
            x = self.act(self.bn(self.conv(x)))
        return self.fc(self.flatten(self.pool(x)))


class Network(nn.Module):
    """Built from a plain config: see ``searchspace._build.config``."""

    def __init__(self, config: dict) -> None:
        super().__init__()
        cin = config["input_shape"][0]
        self.stem = Stem(cin, **config["stem"])
        cin = config["stem"]["width"]
        stages = []
        for stage in config["stages"]:
            blocks = []
            for b in stage:
                blocks.append(Block(cin=cin, **b))
                cin = b["width"]
            stages.append(Stage(blocks))
        self.stages = nn.ModuleList(stages)
        self.head = Head(cin, config["head"]["width"], config["head"]["act"], config["num_classes"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(x)
