"""``build(arch)``: the architecture as a ``torch.nn.Module``.

Module names are readable and stable: ``stem.conv``, ``stages.2.blocks.0.dw``,
``head.fc``; they are the names ``Architecture.lower`` gives its layers.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from searchspace._arch import Architecture
from searchspace._modules import Network


def config(arch: Architecture) -> dict[str, Any]:
    """The architecture as plain Python data (what ``Network`` and the export read)."""
    st = arch.stem
    return {
        "input_shape": list(arch.input_shape),
        "num_classes": arch.num_classes,
        "stem": {
            "kernel": st.kernel,
            "width": st.width,
            "stride": st.stride,
            "act": st.act,
            "pool": st.pool,
        },
        "stages": [
            [
                {
                    "op": b.op,
                    "kernel": b.kernel,
                    "width": b.width,
                    "stride": b.stride,
                    "act": b.act,
                    "expansion": b.expansion,
                    "groups": b.groups,
                }
                for b in stage
            ]
            for stage in arch.stages
        ],
        "head": {"width": arch.head.width, "act": arch.head.act},
    }


def build(arch: Architecture) -> nn.Module:
    """A freshly initialised module (PyTorch default init) in training mode."""
    if not isinstance(arch, Architecture):
        raise TypeError(f"arch={arch!r} must be a searchspace.Architecture")
    return Network(config(arch))
