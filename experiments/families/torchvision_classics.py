"""torchvision's MobileNet V2 (Sandler et al., CVPR 2018) at four widths and ResNet-18
(He et al., CVPR 2016), each with its 1000-class head, as ``tests/reference_nets.py``
writes them (torchvision's code, parameter counts checked there).

Written after the classifier heads were added to calibration's sweep, to check that
change on networks that played no part in it or in any earlier decision: no CPU fit or
validation has timed them. Each public name without arguments builds one network;
``experiments/torchvision_classics.txt`` lists them with their input shapes for
``python -m costmodel validate --networks``.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from costmodel import import_file

_REF = import_file(Path(__file__).resolve().parents[2] / "tests" / "reference_nets.py")


def mobilenet_v2_x0_5() -> nn.Module:
    return _REF.MobileNetV2(width_mult=0.5)


def mobilenet_v2_x0_75() -> nn.Module:
    return _REF.MobileNetV2(width_mult=0.75)


def mobilenet_v2_x1_0() -> nn.Module:
    return _REF.MobileNetV2(width_mult=1.0)


def mobilenet_v2_x1_4() -> nn.Module:
    return _REF.MobileNetV2(width_mult=1.4)


def resnet18() -> nn.Module:
    return _REF.ResNet18()
