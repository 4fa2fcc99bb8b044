"""The one currency: a frozen description of one layer.

The search space lowers to it, ``profile()`` extracts it from a traced
``nn.Module``, the cost formulas read it and the exporter builds from the same
architecture. Shapes include the batch dimension: ``in_shape = (N, C, H, W)``
for 2-D layers and ``(N, ..., F)`` for fully connected layers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Layer kinds with a formula in ``_formulas``; anything else raises.
CONV2D = "conv2d"
LINEAR = "linear"
BATCHNORM2D = "batchnorm2d"
RELU = "relu"
RELU6 = "relu6"
HARDSWISH = "hardswish"
HARDSIGMOID = "hardsigmoid"
SIGMOID = "sigmoid"
SILU = "silu"
MAXPOOL2D = "maxpool2d"
AVGPOOL2D = "avgpool2d"
GLOBAL_AVGPOOL2D = "global_avgpool2d"
ADD = "add"
MUL = "mul"
CHANNEL_SHUFFLE = "channel_shuffle"
CONCAT = "concat"
SPLIT = "split"
FLATTEN = "flatten"
IDENTITY = "identity"

ACTIVATIONS = (RELU, RELU6, HARDSWISH, HARDSIGMOID, SIGMOID, SILU)

# What ``LayerSpec.inputs`` names the network's input tensor.
NETWORK_INPUT = "input"


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) for v in pair):
        raise ValueError(f"{name}={value!r} must be an int or a pair of ints")
    return pair  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class LayerSpec:
    """One layer, as the cost model sees it.

    ``name`` and ``inputs`` (names of the producing layers, ``NETWORK_INPUT``
    for the network input) place the layer in its network; they take no part in
    equality or hashing, so identical layers share one cached cost.
    """

    op: str
    in_shape: tuple[int, ...]
    out_channels: int = 0  # conv2d: output channels; linear: output features; concat: total
    kernel_size: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1  # conv2d groups; channel_shuffle groups
    bias: bool = False
    affine: bool = True  # batchnorm2d
    # add / mul / concat: tensor operands (add, mul: 1 = with a Python scalar)
    num_inputs: int = 1
    # add / mul: shape of the second operand when it broadcasts over in_shape (a squeeze-
    # and-excitation gate (N, C, 1, 1)); () when both operands have in_shape.
    other_shape: tuple[int, ...] = ()
    name: str = field(default="", compare=False)
    inputs: tuple[str, ...] = field(default=(), compare=False)
    # Writes its output over its input (nn.ReLU(inplace=True), relu_): no new tensor,
    # which only the CPU allocator model (costmodel._allocator) reads.
    inplace: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        shape = tuple(self.in_shape)
        if not shape or not all(isinstance(d, int) and d > 0 for d in shape):
            raise ValueError(f"{self._who()}: in_shape={self.in_shape!r} must be positive ints")
        object.__setattr__(self, "in_shape", shape)
        for attr in ("kernel_size", "stride", "padding", "dilation"):
            object.__setattr__(self, attr, _pair(getattr(self, attr), attr))
        if self.groups < 1:
            raise ValueError(f"{self._who()}: groups={self.groups} must be >= 1")
        if self.num_inputs < 1:
            raise ValueError(f"{self._who()}: num_inputs={self.num_inputs} must be >= 1")
        other = tuple(self.other_shape)
        if not all(isinstance(d, int) and d > 0 for d in other):
            raise ValueError(
                f"{self._who()}: other_shape={self.other_shape!r} must be positive ints"
            )
        object.__setattr__(self, "other_shape", other)

    def _who(self) -> str:
        return f"layer {self.name!r} ({self.op})" if self.name else f"{self.op} layer"

    @property
    def batch(self) -> int:
        return self.in_shape[0]

    @property
    def in_channels(self) -> int:
        # conv-like layers are (N, C, H, W); linear layers read the last dim.
        return self.in_shape[-1] if self.op == LINEAR else self.in_shape[1]
