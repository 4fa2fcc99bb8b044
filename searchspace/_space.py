"""Search spaces declared in TOML, validated on load.

Schema (every key below; anything else is an error naming the key)::

    name = "mobile"                 # str, required
    description = "..."             # str, optional
    input_channels = 3              # int >= 1
    resolutions = [224]             # square input sizes to choose from, ints >= 1
    num_classes = 1000              # int >= 1
    groups = [2, 4, 8]              # group-conv choices (g >= 2) for "gconv" and "sh";
                                    # required when a stage offers either, else omit

    [stem]                          # conv k x k stride s, BN, act [, 3x3/2 max pool]
    kernels = [3]                   # odd ints
    widths = [16, 24, 32]           # output channels
    stride = 2                      # fixed
    activations = ["relu6"]         # relu | relu6 | hardswish | silu
    pool = [false, true]            # optional, default [false]

    [[stages]]                      # one table per stage, in order
    stride = 2                      # stride of the stage's first block; the rest use 1
    depths = [2, 3]                 # number of blocks (0 allowed: the stage is skipped)
    widths = [24, 32]               # output channels, shared by the stage's blocks
    ops = ["ir", "ds"]              # conv (standard) | gconv | ds | ir | sh
    kernels = [3, 5, 7]             # odd ints
    expansions = [3, 6]             # ir expansion ratios; required iff ops has "ir"
    activations = ["relu6"]

    [head]                          # [1x1 conv, BN, act], global avg pool, flatten, linear
    widths = [1280]                 # 1x1 conv width; 0 = no conv
    activations = ["relu6"]

Buildability: a group count must divide the channels it splits.
This module ROUNDS WIDTHS rather than restricting the group choice per block:
when any stage offers "gconv" or "sh", every stem and stage width is rounded
to the nearest multiple of m = lcm(groups) (at least m), and stages offering
"sh" to multiples of 4 * m (the ShuffleNet bottleneck is width / 4, split into
g groups). Duplicates after rounding are dropped. Then every g divides every
channel count it can meet, so every sampled architecture builds and the group
choice has the same distribution in every block (Optuna needs that).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from searchspace._arch import ACT_CODES, SHUFFLE_BOTTLENECK, Architecture

SPACE_OPS = ("conv", "gconv", "ds", "ir", "sh")
# The spaces shipped with the package, found by name: "cifar" -> spaces/cifar.toml.
SPACES_DIR = Path(__file__).with_name("spaces")


class SpaceError(ValueError):
    """A search-space file or value that cannot be used."""


@dataclass(frozen=True)
class StemSpace:
    kernels: tuple[int, ...]
    widths: tuple[int, ...]
    stride: int
    activations: tuple[str, ...]
    pool: tuple[bool, ...] = (False,)


@dataclass(frozen=True)
class StageSpace:
    stride: int
    depths: tuple[int, ...]
    widths: tuple[int, ...]
    ops: tuple[str, ...]
    kernels: tuple[int, ...]
    activations: tuple[str, ...]
    expansions: tuple[int, ...] = ()


@dataclass(frozen=True)
class HeadSpace:
    widths: tuple[int, ...]
    activations: tuple[str, ...]


@dataclass(frozen=True)
class SearchSpace:
    name: str
    input_channels: int
    resolutions: tuple[int, ...]
    num_classes: int
    stem: StemSpace
    stages: tuple[StageSpace, ...]
    head: HeadSpace
    groups: tuple[int, ...] = ()
    description: str = ""
    path: str = ""

    def explain(self, arch: Architecture) -> str | None:
        """Why ``arch`` is not a point of this space, or None when it is."""
        c, h, w = arch.input_shape
        if c != self.input_channels:
            return f"input channels={c}, space has input_channels={self.input_channels}"
        if h != w or h not in self.resolutions:
            return f"input {h}x{w}, space has resolutions={list(self.resolutions)}"
        if arch.num_classes != self.num_classes:
            return f"num_classes={arch.num_classes}, space has {self.num_classes}"
        st, ss = arch.stem, self.stem
        for key, v, allowed in (
            ("kernel", st.kernel, ss.kernels),
            ("width", st.width, ss.widths),
            ("stride", st.stride, (ss.stride,)),
            ("act", st.act, ss.activations),
            ("pool", st.pool, ss.pool),
        ):
            if v not in allowed:
                return f"stem {key}={v!r} not in {list(allowed)}"
        if len(arch.stages) != len(self.stages):
            return f"{len(arch.stages)} stages, space has {len(self.stages)}"
        for i, (stage, sp) in enumerate(zip(arch.stages, self.stages, strict=True)):
            if len(stage) not in sp.depths:
                return f"stage {i} depth={len(stage)} not in {list(sp.depths)}"
            for j, b in enumerate(stage):
                where = f"stages.{i}.blocks.{j} ({b.token()})"
                op = "gconv" if b.op == "conv" and b.groups > 1 else b.op
                checks: list[tuple[str, Any, tuple[Any, ...]]] = [
                    ("op", op, sp.ops),
                    ("kernel", b.kernel, sp.kernels),
                    ("width", b.width, sp.widths if b.width == stage[0].width else ()),
                    ("stride", b.stride, (sp.stride if j == 0 else 1,)),
                    ("act", b.act, sp.activations),
                ]
                if b.op == "ir":
                    checks.append(("expansion", b.expansion, sp.expansions))
                if op in ("gconv", "sh"):
                    checks.append(("groups", b.groups, self.groups))
                for key, v, allowed in checks:
                    if v not in allowed:
                        return f"{where}: {key}={v!r} not in {list(allowed)}"
        if arch.head.width not in self.head.widths:
            return f"head width={arch.head.width} not in {list(self.head.widths)}"
        if arch.head.act not in self.head.activations:
            return f"head act={arch.head.act!r} not in {list(self.head.activations)}"
        return None

    def contains(self, arch: Architecture) -> bool:
        return self.explain(arch) is None

    def __contains__(self, arch: object) -> bool:
        return isinstance(arch, Architecture) and self.contains(arch)


# -- loading -------------------------------------------------------------------
_TOP = {"name", "description", "input_channels", "resolutions", "num_classes", "groups",
        "stem", "stages", "head"}  # fmt: skip
_STEM = {"kernels", "widths", "stride", "activations", "pool"}
_STAGE = {"stride", "depths", "widths", "ops", "kernels", "expansions", "activations"}
_HEAD = {"widths", "activations"}


def _err(where: str, key: str, value: Any, why: str) -> SpaceError:
    return SpaceError(f"{where}: {key}={value!r} {why}")


def _keys(d: Any, allowed: set[str], required: set[str], where: str) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise SpaceError(f"{where} must be a table, got {d!r}")
    for k in d:
        if k not in allowed:
            raise _err(where, k, d[k], f"is not a known key; known keys: {sorted(allowed)}")
    for k in sorted(required - set(d)):
        raise SpaceError(f"{where}: required key {k!r} is missing")
    return d


def _int(d: dict[str, Any], key: str, where: str, lo: int = 1) -> int:
    v = d[key]
    if type(v) is not int or v < lo:
        raise _err(where, key, v, f"must be an int >= {lo}")
    return v


def _ints(
    d: dict[str, Any], key: str, where: str, lo: int = 1, odd: bool = False
) -> tuple[int, ...]:
    v = d[key]
    if not isinstance(v, list) or not v:
        raise _err(where, key, v, "must be a non-empty list of ints")
    for x in v:
        if type(x) is not int or x < lo:
            raise _err(where, key, v, f"must hold ints >= {lo} (bad: {x!r})")
        if odd and x % 2 == 0:
            raise _err(where, key, v, f"must hold odd kernel sizes (bad: {x!r})")
    if len(set(v)) != len(v):
        raise _err(where, key, v, "has duplicates")
    return tuple(v)


def _acts(d: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    v = d[key]
    if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
        raise _err(where, key, v, "must be a non-empty list of strings")
    for x in v:
        if x not in ACT_CODES:
            raise _err(where, key, v, f"holds {x!r}, not one of {list(ACT_CODES)}")
    if len(set(v)) != len(v):
        raise _err(where, key, v, "has duplicates")
    return tuple(v)


def round_width(width: int, multiple: int) -> int:
    """Nearest multiple of ``multiple`` (halves round up), never below ``multiple``."""
    return max(multiple, (width + multiple // 2) // multiple * multiple)


def _rounded(widths: tuple[int, ...], multiple: int) -> tuple[int, ...]:
    return tuple(dict.fromkeys(round_width(w, multiple) for w in widths))


def parse_space(data: dict[str, Any], where: str = "<space>") -> SearchSpace:
    d = _keys(
        data,
        _TOP,
        {"name", "input_channels", "resolutions", "num_classes", "stem", "stages", "head"},
        where,
    )
    name = d["name"]
    if not isinstance(name, str) or not name:
        raise _err(where, "name", name, "must be a non-empty string")
    desc = d.get("description", "")
    if not isinstance(desc, str):
        raise _err(where, "description", desc, "must be a string")
    groups: tuple[int, ...] = _ints(d, "groups", where, lo=2) if "groups" in d else ()
    raw_stages = d["stages"]
    if not isinstance(raw_stages, list) or not raw_stages:
        raise _err(where, "stages", raw_stages, "must be a non-empty array of tables [[stages]]")
    uses_groups = False
    stage_dicts = []
    for i, sd in enumerate(raw_stages):
        w = f"{where}: stages[{i}]"
        sd = _keys(sd, _STAGE, _STAGE - {"expansions"}, w)
        ops = sd["ops"]
        if not isinstance(ops, list) or not ops:
            raise _err(w, "ops", ops, f"must be a non-empty list of {list(SPACE_OPS)}")
        for op in ops:
            if op not in SPACE_OPS:
                raise _err(w, "ops", ops, f"holds {op!r}, not one of {list(SPACE_OPS)}")
        if len(set(ops)) != len(ops):
            raise _err(w, "ops", ops, "has duplicates")
        if ("ir" in ops) != ("expansions" in sd):
            raise _err(
                w, "expansions", sd.get("expansions"), 'is required exactly when ops has "ir"'
            )
        uses_groups |= "gconv" in ops or "sh" in ops
        stage_dicts.append((w, sd))
    if uses_groups and not groups:
        raise _err(
            where, "groups", list(groups), 'must be given when a stage offers "gconv" or "sh"'
        )
    multiple = math.lcm(*groups) if uses_groups else 1
    stages = []
    for w, sd in stage_dicts:
        depths = _ints(sd, "depths", w, lo=0)
        m = multiple * (SHUFFLE_BOTTLENECK if "sh" in sd["ops"] else 1)
        stages.append(
            StageSpace(
                stride=_int(sd, "stride", w),
                depths=depths,
                widths=_rounded(_ints(sd, "widths", w), m),
                ops=tuple(sd["ops"]),
                kernels=_ints(sd, "kernels", w, odd=True),
                activations=_acts(sd, "activations", w),
                expansions=_ints(sd, "expansions", w) if "expansions" in sd else (),
            )
        )
    if all(max(s.depths) == 0 for s in stages):
        raise SpaceError(f"{where}: stages all have depths=[0]; a network needs a block")
    w = f"{where}: stem"
    sd = _keys(d["stem"], _STEM, _STEM - {"pool"}, w)
    pool = sd.get("pool", [False])
    if not isinstance(pool, list) or not pool or not all(isinstance(p, bool) for p in pool):
        raise _err(w, "pool", pool, "must be a non-empty list of booleans")
    stem = StemSpace(
        kernels=_ints(sd, "kernels", w, odd=True),
        widths=_rounded(_ints(sd, "widths", w), multiple),
        stride=_int(sd, "stride", w),
        activations=_acts(sd, "activations", w),
        pool=tuple(dict.fromkeys(pool)),
    )
    w = f"{where}: head"
    hd = _keys(d["head"], _HEAD, _HEAD, w)
    head = HeadSpace(widths=_ints(hd, "widths", w, lo=0), activations=_acts(hd, "activations", w))
    return SearchSpace(
        name=name,
        input_channels=_int(d, "input_channels", where),
        resolutions=_ints(d, "resolutions", where),
        num_classes=_int(d, "num_classes", where),
        stem=stem,
        stages=tuple(stages),
        head=head,
        groups=groups,
        description=desc,
        path=where,
    )


def available_spaces() -> list[str]:
    """Names of the search spaces shipped with the package, sorted."""
    return sorted(p.stem for p in SPACES_DIR.glob("*.toml"))


def space_path(name_or_path: str | Path) -> Path:
    """The file of a shipped space's name (e.g. "cifar") or of a path to a TOML file."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    if p.suffix != ".toml" and p.parent == Path("."):
        shipped = SPACES_DIR / f"{p}.toml"
        if shipped.is_file():
            return shipped
        raise SpaceError(
            f"search space {str(name_or_path)!r} is neither a file nor a shipped space; "
            f"shipped: {available_spaces()}"
        )
    raise SpaceError(f"search-space file {str(name_or_path)!r} does not exist")


def load_space(name_or_path: str | Path) -> SearchSpace:
    """Read and validate a shipped space by name or a search-space TOML file by path.

    The schema is in this module's docstring.
    """
    p = space_path(name_or_path)
    try:
        with p.open("rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise SpaceError(f"{p}: not valid TOML: {e}") from None
    return parse_space(data, str(p))
