"""``build(arch)``: the architecture as a ``torch.nn.Module``.

Module names are readable and stable: ``stem.conv``, ``stages.2.blocks.0.dw``,
``head.fc``; they are the names ``Architecture.lower`` gives its layers.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from searchspace._arch import Architecture


def config(arch: Architecture) -> dict[str, Any]:
    """The architecture as plain Python data (what ``Network`` and the export read)."""
    return arch.config()


def build(arch: Architecture) -> nn.Module:
    """A freshly initialised module (PyTorch default init) in training mode."""
    if not isinstance(arch, Architecture):
        raise TypeError(f"arch={arch!r} must be a searchspace.Architecture")
    return arch.build()
