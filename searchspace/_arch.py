"""Frozen architecture description and its canonical string (timm-like grammar).

Grammar (sections separated by ``:``, blocks of one stage by ``,``)::

    arch   := header ":" stem (":" stage)+ ":" head
    header := "in_c" C "_h" H "_w" W "_n" CLASSES           in_c3_h224_w224_n1000
    stem   := "stem_k" K "_c" C "_s" S "_n" ACT ["_mp"]     stem_k3_c32_s2_nr6 (_mp: 3x3/2 maxpool)
    stage  := "-" (no blocks) | block ("," block)*
    block  := "ir_k" K "_e" E "_c" C "_s" S "_n" ACT        inverted residual (MobileNetV2)
            | "ds_k" K "_c" C "_s" S "_n" ACT               depthwise-separable (MobileNetV1)
            | "conv_k" K "_g" G "_c" C "_s" S "_n" ACT      standard (g1) or group conv
            | "sh_k" K "_g" G "_c" C "_s" S "_n" ACT        ShuffleNet-V1-like unit
    head   := "head_c" C "_n" ACT                           c0: no 1x1 conv before the pool
    ACT    := "re" (relu) | "r6" (relu6) | "hs" (hardswish) | "sw" (silu)

Every token is always written, in this order, so ``to_string`` and
``from_string`` are exact inverses; anything else is rejected with a
ValueError naming the bad token and the whole string.

Block semantics (shared by ``lower`` and ``build``; padding is k // 2):
- ir: [1x1 expand, BN, act] (omitted when e = 1), kxk depthwise stride s, BN,
  act, 1x1 project, BN (linear bottleneck);
- ds: kxk depthwise stride s, BN, act, 1x1 pointwise, BN, act;
- conv: kxk conv with g groups stride s, BN, act;
- sh: 1x1 group conv (g) to c/4, BN, act, channel shuffle (g), kxk depthwise
  stride s, BN, 1x1 group conv (g) to c, BN, [+ x], act. ShuffleNet V1
  concatenates an average-pooled shortcut on stride 2; concatenation is not a
  costed op here, so a stride-2 unit has no shortcut (as in MobileNetV2).
- Every block adds its input (``x + y``) when stride is 1 and channels match
  (for sh before its final activation, for the others at the very end).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from costmodel import NETWORK_INPUT, LayerSpec
from searchspace._lower import SHUFFLE_BOTTLENECK, lower, lower_block, lower_head, lower_stem
from searchspace._modules import Network

if TYPE_CHECKING:
    from torch import nn

# Activation codes (timm's "n" prefix) -> LayerSpec op / torch module name.
ACTIVATIONS: dict[str, str] = {"re": "relu", "r6": "relu6", "hs": "hardswish", "sw": "silu"}
ACT_CODES: dict[str, str] = {v: k for k, v in ACTIVATIONS.items()}
BLOCK_OPS = ("ir", "ds", "conv", "sh")
# Token fields per block op, in canonical order.
_FIELDS: dict[str, tuple[str, ...]] = {
    "ir": ("k", "e", "c", "s", "n"),
    "ds": ("k", "c", "s", "n"),
    "conv": ("k", "g", "c", "s", "n"),
    "sh": ("k", "g", "c", "s", "n"),
}
_INT = re.compile(r"[1-9][0-9]*|0")


@dataclass(frozen=True)
class Stem:
    kernel: int
    width: int
    stride: int
    act: str  # LayerSpec op name: relu, relu6, hardswish, silu
    pool: bool = False  # 3x3 stride-2 max pool after the conv (ShuffleNet, ResNet)

    def __post_init__(self) -> None:
        # The cost cache keys a segment on it (hashing a str is cached).
        object.__setattr__(
            self, "key", f"stem_k{self.kernel}_c{self.width}_s{self.stride}_{self.act}_{self.pool}"
        )

    def lower(self, batch: int, in_chw: tuple[int, ...]) -> list[LayerSpec]:
        """This stem alone, as a segment reading a ``(batch, *in_chw)`` network input."""
        specs: list[LayerSpec] = []
        lower_stem(self, (batch, *in_chw), NETWORK_INPUT, specs)
        return specs


@dataclass(frozen=True)
class Block:
    op: str  # ir | ds | conv | sh
    kernel: int
    width: int  # output channels
    stride: int
    act: str
    expansion: int = 1  # ir only
    groups: int = 1  # conv and sh only

    def __post_init__(self) -> None:
        if self.op in _FIELDS and self.act in ACT_CODES:  # else Architecture reports it
            # The canonical token, kept: the cost cache keys on it (hashing a str is cached).
            object.__setattr__(self, "key", self.token())

    def residual(self, in_channels: int) -> bool:
        return self.stride == 1 and in_channels == self.width

    def lower(self, batch: int, in_chw: tuple[int, ...]) -> list[LayerSpec]:
        """This block alone, as a segment reading a ``(batch, *in_chw)`` network input."""
        specs: list[LayerSpec] = []
        lower_block(self, (batch, *in_chw), NETWORK_INPUT, specs, "block")
        return specs

    def token(self) -> str:
        vals = {
            "k": self.kernel,
            "e": self.expansion,
            "g": self.groups,
            "c": self.width,
            "s": self.stride,
            "n": ACT_CODES[self.act],
        }
        return "_".join([self.op] + [f"{f}{vals[f]}" for f in _FIELDS[self.op]])


@dataclass(frozen=True)
class Head:
    width: int  # 0: no 1x1 conv before the global pool
    act: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"head_c{self.width}_{self.act}")


@dataclass(frozen=True)
class _HeadSegment:
    """The head with the class count it ends in: the last segment of a network."""

    head: Head
    num_classes: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.head.key}_n{self.num_classes}")

    def lower(self, batch: int, in_chw: tuple[int, ...]) -> list[LayerSpec]:
        specs: list[LayerSpec] = []
        lower_head(self.head, self.num_classes, (batch, *in_chw), NETWORK_INPUT, specs)
        return specs


@dataclass(frozen=True)
class Architecture:
    """A network: stem, stages of blocks (a stage may be empty) and a classifier head.

    It lowers itself to layer specs (``lower``), as a chain of segments that
    lower themselves (``segments``: stem, blocks, head), and builds its module
    (``build``): what ``costmodel.estimate`` costs and calibration and
    validation time.
    """

    input_shape: tuple[int, int, int]  # (channels, height, width)
    num_classes: int
    stem: Stem
    stages: tuple[tuple[Block, ...], ...]
    head: Head

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", tuple(self.input_shape))
        object.__setattr__(self, "stages", tuple(tuple(s) for s in self.stages))
        _validate(self)
        # Computed once: estimate walks them on every call.
        segments = (self.stem, *self.blocks, _HeadSegment(self.head, self.num_classes))
        object.__setattr__(self, "_segments", segments)

    # -- encoding -------------------------------------------------------------
    def to_string(self) -> str:
        c, h, w = self.input_shape
        st = self.stem
        parts = [
            f"in_c{c}_h{h}_w{w}_n{self.num_classes}",
            f"stem_k{st.kernel}_c{st.width}_s{st.stride}_n{ACT_CODES[st.act]}"
            + ("_mp" if st.pool else ""),
        ]
        parts += [",".join(b.key for b in stage) or "-" for stage in self.stages]
        parts.append(f"head_c{self.head.width}_n{ACT_CODES[self.head.act]}")
        return ":".join(parts)

    __str__ = to_string

    @classmethod
    def from_string(cls, s: str) -> Architecture:
        return _parse(s)

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "stem": _fields_of(self.stem),
            "stages": [[_fields_of(b) for b in stage] for stage in self.stages],
            "head": _fields_of(self.head),
            "string": self.to_string(),
        }

    def to_json(self, **kw: Any) -> str:
        return json.dumps(self.to_dict(), **kw)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Architecture:
        try:
            arch = cls(
                input_shape=tuple(d["input_shape"]),
                num_classes=d["num_classes"],
                stem=Stem(**d["stem"]),
                stages=tuple(tuple(Block(**b) for b in stage) for stage in d["stages"]),
                head=Head(**d["head"]),
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"architecture JSON is missing or has a bad field: {e}") from None
        if "string" in d and d["string"] != arch.to_string():
            raise ValueError(
                f"architecture JSON: string={d['string']!r} does not match its fields "
                f"({arch.to_string()!r})"
            )
        return arch

    @classmethod
    def from_json(cls, text: str) -> Architecture:
        return cls.from_dict(json.loads(text))

    # -- derived ----------------------------------------------------------------
    @property
    def blocks(self) -> tuple[Block, ...]:
        return tuple(b for stage in self.stages for b in stage)

    def lower(self, batch: int = 1) -> tuple[LayerSpec, ...]:
        """The network as ``costmodel.LayerSpec``s, named as ``profile(build(arch))`` names them."""
        return lower(self, batch)

    def segments(self) -> tuple[Stem | Block | _HeadSegment, ...]:
        """Stem, blocks and head in order; each lowers itself alone given batch and input."""
        return self._segments  # type: ignore[attr-defined, no-any-return]

    def config(self) -> dict[str, Any]:
        """The architecture as plain Python data (what ``Network`` and the export read)."""
        st = self.stem
        return {
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
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
                for stage in self.stages
            ],
            "head": {"width": self.head.width, "act": self.head.act},
        }

    def build(self) -> nn.Module:
        """A freshly initialised module (PyTorch default init) in training mode."""
        return Network(self.config())


def _fields_of(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


def _check(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise ValueError(f"{where}: {msg}")


def _validate(a: Architecture) -> None:
    c, h, w = a.input_shape
    for key, v in (("channels", c), ("height", h), ("width", w), ("num_classes", a.num_classes)):
        _check(isinstance(v, int) and v >= 1, "architecture", f"{key}={v!r} must be an int >= 1")
    st = a.stem
    _check_common("stem", st.kernel, st.width, st.stride, st.act)
    cin = st.width
    for i, stage in enumerate(a.stages):
        for j, b in enumerate(stage):
            where = f"stages.{i}.blocks.{j} ({b.op})"
            _check(b.op in BLOCK_OPS, where, f"op={b.op!r} is not one of {list(BLOCK_OPS)}")
            _check_common(where, b.kernel, b.width, b.stride, b.act)
            _check(
                isinstance(b.expansion, int) and b.expansion >= 1,
                where,
                f"expansion={b.expansion!r} must be an int >= 1",
            )
            _check(b.op == "ir" or b.expansion == 1, where, "expansion is for ir blocks only")
            g = b.groups
            _check(isinstance(g, int) and g >= 1, where, f"groups={g!r} must be an int >= 1")
            _check(b.op in ("conv", "sh") or g == 1, where, "groups is for conv and sh blocks only")
            if b.op in ("conv", "sh"):
                _check(cin % g == 0, where, f"groups={g} must divide in_channels={cin}")
            if b.op == "conv":
                _check(b.width % g == 0, where, f"groups={g} must divide width={b.width}")
            if b.op == "sh":
                mid = b.width // SHUFFLE_BOTTLENECK
                _check(
                    b.width % SHUFFLE_BOTTLENECK == 0 and mid % g == 0,
                    where,
                    f"width={b.width} must be a multiple of {SHUFFLE_BOTTLENECK} * groups={g} "
                    "(bottleneck width / 4 split into g groups)",
                )
            cin = b.width
    _check(
        isinstance(a.head.width, int) and a.head.width >= 0,
        "head",
        f"width={a.head.width!r} must be an int >= 0",
    )
    _check(a.head.act in ACT_CODES, "head", f"act={a.head.act!r} is not one of {list(ACT_CODES)}")


def _check_common(where: str, k: int, width: int, stride: int, act: str) -> None:
    _check(isinstance(k, int) and k >= 1 and k % 2 == 1, where, f"kernel={k!r} must be odd >= 1")
    _check(isinstance(width, int) and width >= 1, where, f"width={width!r} must be an int >= 1")
    _check(isinstance(stride, int) and stride >= 1, where, f"stride={stride!r} must be >= 1")
    _check(act in ACT_CODES, where, f"act={act!r} is not one of {list(ACT_CODES)}")


# -- parsing ------------------------------------------------------------------
def _fail(token: str, s: str, why: str) -> ValueError:
    return ValueError(f"bad token {token!r} in architecture string {s!r}: {why}")


def _fields(token: str, prefix: str, names: tuple[str, ...], s: str) -> dict[str, str]:
    parts = token.split("_")
    if parts[0] != prefix:
        raise _fail(token, s, f"expected a {prefix!r} token")
    got = parts[1:]
    if len(got) != len(names):
        want = "_".join([prefix] + [f"{n}<..>" for n in names])
        raise _fail(token, s, f"expected the form {want}")
    out: dict[str, str] = {}
    for part, name in zip(got, names, strict=True):
        if not part.startswith(name) or len(part) == len(name):
            raise _fail(token, s, f"expected field {name!r} here, got {part!r}")
        out[name] = part[len(name) :]
    return out


def _int(token: str, s: str, field: str, text: str) -> int:
    if not _INT.fullmatch(text):
        raise _fail(token, s, f"{field}={text!r} is not a canonical integer")
    return int(text)


def _act(token: str, s: str, code: str) -> str:
    if code not in ACTIVATIONS:
        raise _fail(token, s, f"activation {code!r} is not one of {list(ACTIVATIONS)}")
    return ACTIVATIONS[code]


def _parse_block(token: str, s: str) -> Block:
    op = token.split("_", 1)[0]
    if op not in _FIELDS:
        raise _fail(token, s, f"block op {op!r} is not one of {list(BLOCK_OPS)}")
    f = _fields(token, op, _FIELDS[op], s)
    return Block(
        op=op,
        kernel=_int(token, s, "k", f["k"]),
        width=_int(token, s, "c", f["c"]),
        stride=_int(token, s, "s", f["s"]),
        act=_act(token, s, f["n"]),
        expansion=_int(token, s, "e", f["e"]) if "e" in f else 1,
        groups=_int(token, s, "g", f["g"]) if "g" in f else 1,
    )


def _parse(s: str) -> Architecture:
    if not isinstance(s, str):
        raise ValueError(f"architecture string must be a str, got {s!r}")
    sections = s.split(":")
    if len(sections) < 4:
        raise ValueError(
            f"architecture string {s!r} needs header:stem:stage[:stage...]:head "
            f"sections separated by ':', got {len(sections)}"
        )
    hd = _fields(sections[0], "in", ("c", "h", "w", "n"), s)
    input_shape = tuple(_int(sections[0], s, k, hd[k]) for k in ("c", "h", "w"))
    num_classes = _int(sections[0], s, "n", hd["n"])
    stem_tok = sections[1]
    pool = stem_tok.endswith("_mp")
    st = _fields(stem_tok[:-3] if pool else stem_tok, "stem", ("k", "c", "s", "n"), s)
    stem = Stem(
        kernel=_int(stem_tok, s, "k", st["k"]),
        width=_int(stem_tok, s, "c", st["c"]),
        stride=_int(stem_tok, s, "s", st["s"]),
        act=_act(stem_tok, s, st["n"]),
        pool=pool,
    )
    stages = []
    for sec in sections[2:-1]:
        if sec == "-":
            stages.append(())
        elif not sec:
            raise _fail(sec, s, "an empty stage is written '-'")
        else:
            stages.append(tuple(_parse_block(tok, s) for tok in sec.split(",")))
    hf = _fields(sections[-1], "head", ("c", "n"), s)
    head = Head(width=_int(sections[-1], s, "c", hf["c"]), act=_act(sections[-1], s, hf["n"]))
    try:
        return Architecture(input_shape, num_classes, stem, tuple(stages), head)  # type: ignore[arg-type]
    except ValueError as e:
        raise ValueError(f"architecture string {s!r} is not buildable: {e}") from None
