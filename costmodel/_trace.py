"""``profile()``: cost any ``torch.nn.Module`` by tracing it into ``LayerSpec``s.

(To profile a module here is to trace and cost it; a hardware profile is the
``hw`` argument, a ``hw_profiles.HardwareProfile``.)

The model is traced with ``torch.fx`` and its shapes come from running it once
on a real zero tensor (``ShapeProp``); nothing is counted from hand-written
shapes. Each node maps to one ``LayerSpec`` named by one rule, which
``searchspace``'s lowering follows too, so that a built architecture traces to
exactly the layers it lowers to: a module call gets the module's qualified
name, a functional op gets ``f"{owner}.{kind}"`` with ``owner`` the innermost
module whose forward made the call. A node that has no formula is
listed in ``CostReport.unsupported``, never counted as zero.

When fx cannot trace a model (data-dependent control flow), forward hooks on
the leaf modules record a chain of layers instead; functional ops are then
invisible, and a warning says so.
"""

from __future__ import annotations

import contextlib
import io
import math
import operator
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from costmodel import _spec as S
from costmodel._formulas import UnsupportedLayerError, count
from costmodel._report import CostReport, analyze
from costmodel._spec import NETWORK_INPUT, LayerSpec
from hw_profiles import HardwareProfile

__all__ = ["DEFAULT_INPUT_SHAPE", "TraceInternalError", "profile", "trace_layers"]

# An ImageNet-size single image, batch first: what a model is traced on by default.
DEFAULT_INPUT_SHAPE = (1, 3, 224, 224)


class TraceInternalError(RuntimeError):
    """A formula disagrees with the shape PyTorch really produced: a bug in roofnas."""


_ACTIVATION_MODULES: dict[type[nn.Module], str] = {
    nn.ReLU: S.RELU,
    nn.ReLU6: S.RELU6,
    nn.Hardswish: S.HARDSWISH,
    nn.Hardsigmoid: S.HARDSIGMOID,
    nn.Sigmoid: S.SIGMOID,
    nn.SiLU: S.SILU,
}
# In eval mode every dropout is the identity.
_IDENTITY_MODULES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout)

_ACTIVATION_FUNCTIONS: dict[Any, str] = {
    F.relu: S.RELU,
    torch.relu: S.RELU,
    torch.relu_: S.RELU,
    F.relu6: S.RELU6,
    F.hardswish: S.HARDSWISH,
    F.hardsigmoid: S.HARDSIGMOID,
    F.sigmoid: S.SIGMOID,
    torch.sigmoid: S.SIGMOID,
    F.silu: S.SILU,
}
_ACTIVATION_METHODS = {
    "relu": S.RELU,
    "relu_": S.RELU,
    "sigmoid": S.SIGMOID,
    "sigmoid_": S.SIGMOID,
}
_ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)
_ADD_METHODS = ("add", "add_")
_SUB_FUNCTIONS = (operator.sub, operator.isub, torch.sub, torch.subtract, torch.rsub)
_SUB_METHODS = ("sub", "sub_", "subtract", "subtract_", "rsub")
_MUL_FUNCTIONS = (operator.mul, operator.imul, torch.mul)
_MUL_METHODS = ("mul", "mul_")
_DIV_NEG_FUNCTIONS = (
    operator.truediv,
    operator.itruediv,
    torch.div,
    torch.true_divide,
    operator.neg,
    torch.neg,
)
_DIV_NEG_METHODS = ("div", "div_", "true_divide", "true_divide_", "neg", "neg_")
_FLATTEN_FUNCTIONS = (torch.flatten,)
_FLATTEN_METHODS = ("flatten", "view", "reshape")
_CONCAT_FUNCTIONS = (torch.cat, torch.concat, torch.concatenate)
_SPLIT_FUNCTIONS = {
    torch.chunk: "chunks",
    torch.split: "split_size_or_sections",
    torch.tensor_split: "indices_or_sections",
}
_SPLIT_METHODS = {"chunk": "chunks", "split": "split_size", "tensor_split": "indices_or_sections"}
_CHANNEL_SHUFFLE_FUNCTIONS = (
    torch.channel_shuffle,
    F.channel_shuffle,
    torch.native_channel_shuffle,
)


class _Unsupported(Exception):
    """Internal signal: this node has no formula (the message says why)."""


@dataclass(frozen=True)
class _Layer:
    """One costed node, before naming is final."""

    op: str
    kw: dict[str, Any]
    label: str = ""  # what the default name says when it is not ``op`` (sub, truediv)


def _bind(
    args: Sequence[Any], kwargs: dict[str, Any], names: Sequence[str], defaults: dict[str, Any]
) -> dict[str, Any]:
    """Positional + keyword arguments of a functional call, by parameter name."""
    bound = dict(defaults)
    bound.update(zip(names, args, strict=False))
    bound.update(kwargs)
    return bound


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    pair = tuple(value)
    return (pair[0], pair[0]) if len(pair) == 1 else (pair[0], pair[1])


def _require_4d(shape: tuple[int, ...], what: str) -> None:
    if len(shape) != 4:
        raise _Unsupported(f"{what} on an input of shape {shape}; only (N, C, H, W) is costed")


# --- modules -----------------------------------------------------------------------------


def _conv_layer(m: nn.Conv2d, shape: tuple[int, ...]) -> _Layer:
    _require_4d(shape, "Conv2d")
    if m.padding_mode != "zeros":
        raise _Unsupported(f"padding_mode={m.padding_mode!r}")
    kernel, dilation = _pair(m.kernel_size), _pair(m.dilation)
    if isinstance(m.padding, str):
        if m.padding == "valid":
            padding = (0, 0)
        else:  # "same": symmetric only when d*(k-1) is even
            total = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
            if any(t % 2 for t in total):
                raise _Unsupported(f"padding='same' with asymmetric padding {total}")
            padding = (total[0] // 2, total[1] // 2)
    else:
        padding = _pair(m.padding)
    return _Layer(
        S.CONV2D,
        dict(
            out_channels=m.out_channels,
            kernel_size=kernel,
            stride=_pair(m.stride),
            padding=padding,
            dilation=dilation,
            groups=m.groups,
            bias=m.bias is not None,
        ),
    )


def _pool_layer(
    op: str,
    kernel: Any,
    stride: Any,
    padding: Any,
    dilation: Any,
    ceil_mode: bool,
    shape: tuple[int, ...],
    extra: str = "",
) -> _Layer:
    _require_4d(shape, op)
    if ceil_mode:
        raise _Unsupported("ceil_mode=True")
    if extra:
        raise _Unsupported(extra)
    kernel = _pair(kernel)
    stride = kernel if stride is None or stride == [] or stride == () else _pair(stride)
    return _Layer(
        op,
        dict(kernel_size=kernel, stride=stride, padding=_pair(padding), dilation=_pair(dilation)),
    )


def _global_pool_layer(output_size: Any, shape: tuple[int, ...]) -> _Layer:
    _require_4d(shape, "adaptive_avg_pool2d")
    size = _pair(output_size) if output_size is not None else (None, None)
    if size != (1, 1):
        raise _Unsupported(f"output_size={output_size!r} (only 1 is costed)")
    return _Layer(S.GLOBAL_AVGPOOL2D, {})


def _module_layer(m: nn.Module, shape: tuple[int, ...]) -> _Layer:
    t = type(m)
    if t is nn.Conv2d:
        return _conv_layer(m, shape)  # type: ignore[arg-type]
    if t is nn.Linear:
        return _Layer(S.LINEAR, dict(out_channels=m.out_features, bias=m.bias is not None))
    if t is nn.BatchNorm2d:
        _require_4d(shape, "BatchNorm2d")
        return _Layer(S.BATCHNORM2D, dict(affine=m.affine))
    if t in _ACTIVATION_MODULES:
        return _Layer(_ACTIVATION_MODULES[t], {"inplace": bool(getattr(m, "inplace", False))})
    if t is nn.MaxPool2d:
        return _pool_layer(
            S.MAXPOOL2D,
            m.kernel_size,
            m.stride,
            m.padding,
            m.dilation,
            m.ceil_mode,
            shape,
            "return_indices=True" if m.return_indices else "",
        )
    if t is nn.AvgPool2d:
        return _pool_layer(S.AVGPOOL2D, m.kernel_size, m.stride, m.padding, 1, m.ceil_mode, shape)
    if t is nn.AdaptiveAvgPool2d:
        return _global_pool_layer(m.output_size, shape)
    if t is nn.ChannelShuffle:
        _require_4d(shape, "ChannelShuffle")
        return _Layer(S.CHANNEL_SHUFFLE, dict(groups=m.groups))
    if t is nn.Flatten:
        return _Layer(S.FLATTEN, {})  # its traced shape is checked against (N, -1)
    if t in _IDENTITY_MODULES:
        return _Layer(S.IDENTITY, {})
    return _probe_layer(m, shape)


def _probe_layer(m: nn.Module, shape: tuple[int, ...]) -> _Layer:
    """A parameter-free module of a type with no rule, told apart by what it does to a
    tensor of distinct values: the identity, or a channel shuffle with some groups.

    This is how FBNet's and maskrcnn-benchmark's ``ChannelShuffle`` (an ``assert`` and
    ``int(C / g)`` in its forward, which torch.fx cannot trace) is costed.
    """
    if len(shape) != 4 or any(True for _ in m.parameters()) or any(True for _ in m.buffers()):
        raise _Unsupported("")
    x = torch.arange(math.prod(shape), dtype=torch.float64).view(shape)  # exact below 2**53
    try:
        y = m(x)
    except Exception:  # it needs its own dtype or device: leave it unsupported
        raise _Unsupported("") from None
    if not isinstance(y, torch.Tensor) or y.shape != x.shape:
        raise _Unsupported("")
    if torch.equal(y, x):
        return _Layer(S.IDENTITY, {})
    c = shape[1]
    for g in range(2, c + 1):
        if c % g == 0 and torch.equal(y, F.channel_shuffle(x, g)):
            return _Layer(S.CHANNEL_SHUFFLE, dict(groups=g))
    raise _Unsupported("")


# --- functions and methods ---------------------------------------------------------------


def _writes_in_place(target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """relu_ / x.relu_() / F.relu(x, inplace=True): the output is the input tensor."""
    if _target_name(target).endswith("_"):
        return True
    return bool(kwargs.get("inplace", args[1] if len(args) > 1 else False))


def _function_layer(
    target: Any, args: tuple[Any, ...], kwargs: dict[str, Any], shape: tuple[int, ...]
) -> _Layer:
    """``target`` is a function (call_function) or a method name (call_method)."""
    if target in _ACTIVATION_FUNCTIONS:
        op = _ACTIVATION_FUNCTIONS[target]
        return _Layer(op, {"inplace": _writes_in_place(target, args, kwargs)})
    if isinstance(target, str) and target in _ACTIVATION_METHODS:
        return _Layer(_ACTIVATION_METHODS[target], {"inplace": target.endswith("_")})
    # Operands of sums and products are sorted out in _elementwise_operands. A difference
    # costs as a sum and a quotient or negation as a product: one op per element over
    # the same tensors (OFA's and MobileNetV3 ports' h_swish, x * relu6(x + 3) / 6).
    if _is(target, _ADD_FUNCTIONS, _ADD_METHODS) or _is(target, _SUB_FUNCTIONS, _SUB_METHODS):
        if kwargs.get("alpha", 1) != 1:
            raise _Unsupported(f"alpha={kwargs['alpha']!r}")
        return _Layer(S.ADD, {}, "" if _is(target, _ADD_FUNCTIONS, _ADD_METHODS) else "sub")
    if _is(target, _MUL_FUNCTIONS, _MUL_METHODS):
        return _Layer(S.MUL, {})
    if _is(target, _DIV_NEG_FUNCTIONS, _DIV_NEG_METHODS):
        return _Layer(S.MUL, {}, _target_name(target).rstrip("_"))
    if target in _FLATTEN_FUNCTIONS or (isinstance(target, str) and target in _FLATTEN_METHODS):
        return _Layer(S.FLATTEN, {})
    if target in _CONCAT_FUNCTIONS:
        _check_channel_dim(_bind(args, kwargs, ("tensors", "dim"), {"dim": 0}))
        return _Layer(S.CONCAT, {})  # operands are sorted out in _concat_operands
    if target in _SPLIT_FUNCTIONS or (isinstance(target, str) and target in _SPLIT_METHODS):
        parts = _SPLIT_FUNCTIONS.get(target) or _SPLIT_METHODS[target]  # type: ignore[call-overload]
        _require_4d(shape, _target_name(target))
        _check_channel_dim(_bind(args, kwargs, ("input", parts, "dim"), {"dim": 0}))
        return _Layer(S.SPLIT, {})
    if target is operator.getitem and len(args) == 2 and _is_channel_slice(args[1]):
        _require_4d(shape, "a slice")
        return _Layer(S.SPLIT, {})  # x[:, a:b]: a view of some channels
    if target in _CHANNEL_SHUFFLE_FUNCTIONS:
        _require_4d(shape, "channel_shuffle")
        return _Layer(
            S.CHANNEL_SHUFFLE, dict(groups=_bind(args, kwargs, ("input", "groups"), {})["groups"])
        )
    if target is F.dropout:
        if _bind(args, kwargs, ("input", "p", "training"), {"training": True})["training"]:
            raise _Unsupported("training=True")
        return _Layer(S.IDENTITY, {})
    if target is F.adaptive_avg_pool2d:
        return _global_pool_layer(
            _bind(args, kwargs, ("input", "output_size"), {})["output_size"], shape
        )
    if target is F.max_pool2d:
        a = _bind(
            args,
            kwargs,
            (
                "input",
                "kernel_size",
                "stride",
                "padding",
                "dilation",
                "ceil_mode",
                "return_indices",
            ),
            {
                "stride": None,
                "padding": 0,
                "dilation": 1,
                "ceil_mode": False,
                "return_indices": False,
            },
        )
        return _pool_layer(
            S.MAXPOOL2D,
            a["kernel_size"],
            a["stride"],
            a["padding"],
            a["dilation"],
            a["ceil_mode"],
            shape,
            "return_indices=True" if a["return_indices"] else "",
        )
    if target is F.avg_pool2d:
        a = _bind(
            args,
            kwargs,
            ("input", "kernel_size", "stride", "padding", "ceil_mode"),
            {"stride": None, "padding": 0, "ceil_mode": False},
        )
        return _pool_layer(
            S.AVGPOOL2D, a["kernel_size"], a["stride"], a["padding"], 1, a["ceil_mode"], shape
        )
    if target == "mean":
        a = _bind(args, kwargs, ("input", "dim", "keepdim"), {"dim": None, "keepdim": False})
        dims = a["dim"]
        dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
        if len(shape) == 4 and sorted(d % 4 for d in dims) == [2, 3]:
            return _Layer(S.GLOBAL_AVGPOOL2D, {})
        raise _Unsupported(f"mean over dim={a['dim']!r} (only (2, 3) of (N, C, H, W) is costed)")
    raise _Unsupported("")


def _is(target: Any, functions: tuple[Any, ...], methods: tuple[str, ...]) -> bool:
    """Whether ``target`` (a function or, for call_method, a method name) is one of these."""
    return target in methods if isinstance(target, str) else target in functions


def _is_channel_slice(index: Any) -> bool:
    """``x[:, a:b]`` or ``x[:, a:b, :, :]`` (step 1): a view that keeps some channels."""
    whole = slice(None)
    if not isinstance(index, tuple) or len(index) < 2 or index[0] != whole:
        return False
    ch = index[1]
    return (
        isinstance(ch, slice)
        and ch.step in (None, 1)
        and all(isinstance(b, int | fx.Node | None) for b in (ch.start, ch.stop))
        and all(i == whole or i is Ellipsis for i in index[2:])
    )


def _check_channel_dim(bound: dict[str, Any]) -> None:
    """Concat and split are costed along the channels of (N, C, H, W) tensors only."""
    dim = bound["dim"]
    if not isinstance(dim, int) or dim % 4 != 1:
        raise _Unsupported(f"dim={dim!r} (only the channel dim 1 of (N, C, H, W) is costed)")


def _target_name(target: Any) -> str:
    if isinstance(target, str):
        return target
    return getattr(target, "__name__", None) or repr(target)


# --- tracing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Site:
    """One call that produced a tensor: what to name it and what it read."""

    key: str  # unique id of this call (inputs refer to keys)
    default_name: str  # qualified module name, or f"{owner}.{kind}" before dedup
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    inputs: tuple[str, ...]  # keys of the producers, NETWORK_INPUT for the input
    other_shapes: tuple[tuple[int, ...], ...]  # shapes of the other tensor operands
    layer: _Layer | None  # None: unsupported
    what: str  # type name for the unsupported list
    reason: str = ""
    module_call: bool = False


def _owner(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = next(reversed(stack.values()))[0]
    return path if isinstance(path, str) else str(path)


def _shapes(node: Any) -> list[tuple[int, ...]]:
    """Shapes of every tensor a node produced (empty: it produced no tensor)."""
    if not isinstance(node, fx.Node):
        return []
    found: list[tuple[int, ...]] = []

    def walk(meta: Any) -> None:
        if isinstance(meta, TensorMetadata):
            found.append(tuple(int(d) for d in meta.shape))
        elif isinstance(meta, list | tuple):
            for m in meta:
                walk(m)
        elif isinstance(meta, dict):
            for m in meta.values():
                walk(m)

    walk(node.meta.get("tensor_meta"))
    return found


def _single_shape(node: Any) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(int(d) for d in meta.shape) if isinstance(meta, TensorMetadata) else None


def _tensor_args(args: Any) -> Iterator[fx.Node]:
    if isinstance(args, fx.Node):
        if _shapes(args):
            yield args
    elif isinstance(args, list | tuple):
        for a in args:
            yield from _tensor_args(a)
    elif isinstance(args, dict):
        for a in args.values():
            yield from _tensor_args(a)


def _run(model: nn.Module, example: torch.Tensor) -> None:
    """Run the model once; a wrong input shape fails with PyTorch's own message."""
    try:
        model(example)
    except Exception as e:
        raise ValueError(
            f"the model failed on a zero tensor of input_shape={tuple(example.shape)}: "
            f"{type(e).__name__}: {e}"
        ) from e


# --- the hand-written channel shuffle ------------------------------------------------------
#
# ShuffleNet, ShuffleNet V2 and FBNet implementations shuffle with four tensor calls:
#   x.view(N, g, C // g, H, W).transpose(1, 2).contiguous().view(N, C, H, W)
# Only the copy in the middle moves memory; together they are one channel shuffle, costed
# as nn.ChannelShuffle is (each call alone is a reshape the formulas cannot place).

_RESHAPE_METHODS = ("view", "reshape", "flatten")


def _is_call(node: fx.Node, methods: tuple[str, ...], functions: tuple[Any, ...] = ()) -> bool:
    if node.op == "call_method":
        return node.target in methods
    return node.op == "call_function" and node.target in functions


def _dims(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """The dimension arguments of transpose/permute, varargs or one sequence."""
    rest = args[1:]
    if len(rest) == 1 and isinstance(rest[0], list | tuple):
        return tuple(rest[0])
    return tuple(rest)


def _swaps_group_axes(node: fx.Node) -> bool:
    """A transpose of dims 1 and 2 (or the equivalent permute) of a 5-D tensor."""
    if _is_call(node, ("transpose",), (torch.transpose,)):
        dims = _dims(node.args)
        return all(isinstance(d, int) for d in dims) and sorted(d % 5 for d in dims) == [1, 2]
    if _is_call(node, ("permute",), (torch.permute,)):
        dims = _dims(node.args)
        return all(isinstance(d, int) for d in dims) and [d % 5 for d in dims] == [0, 2, 1, 3, 4]
    return False


def _only_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def _shuffle_idioms(gm: fx.GraphModule) -> dict[fx.Node, tuple[fx.Node, int, set[fx.Node]]]:
    """Last node of each shuffle idiom -> (the tensor shuffled, groups, the inner nodes)."""
    found: dict[fx.Node, tuple[fx.Node, int, set[fx.Node]]] = {}
    for grouped in gm.graph.nodes:
        if not _is_call(grouped, _RESHAPE_METHODS, (torch.reshape,)) or not isinstance(
            grouped.args[0], fx.Node
        ):
            continue
        src, shape5 = _single_shape(grouped.args[0]), _single_shape(grouped)
        if src is None or shape5 is None or len(src) != 4 or len(shape5) != 5:
            continue
        n, c, h, w = src
        g = shape5[1]
        if shape5 != (n, g, c // g, h, w) or g * (c // g) != c:
            continue
        swap = _only_user(grouped)
        if swap is None or not _swaps_group_axes(swap):
            continue
        inner, last = {grouped, swap}, _only_user(swap)
        if last is not None and _is_call(last, ("contiguous",)):
            inner.add(last)
            last = _only_user(last)
        if (
            last is not None
            and _is_call(last, _RESHAPE_METHODS, (torch.reshape, torch.flatten))
            and _single_shape(last) == src
        ):
            found[last] = (grouped.args[0], g, inner)
    return found


def _fx_sites(gm: fx.GraphModule, example: torch.Tensor) -> list[_Site]:
    try:
        # ShapeProp prints a traceback before it raises; the error below says it all.
        with contextlib.redirect_stderr(io.StringIO()):
            ShapeProp(gm).propagate(example)
    except Exception as e:
        cause = e.__cause__ or e
        raise ValueError(
            f"the model failed on a zero tensor of input_shape={tuple(example.shape)}: "
            f"{type(cause).__name__}: {cause}"
        ) from e
    modules = dict(gm.named_modules())
    shuffles = _shuffle_idioms(gm)
    inner = set().union(*(nodes for _, _, nodes in shuffles.values()))
    sites: list[_Site] = []
    key_of: dict[fx.Node, str] = {}  # node -> key of the call that produced its tensor
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            key_of[node] = NETWORK_INPUT
            continue
        shapes = _shapes(node)
        if node.op == "output" or not shapes or node in inner:  # no work of its own
            continue
        if node in shuffles:
            src, groups, _ = shuffles[node]
            sites.append(_shuffle_site(node, key_of[src], groups))
            key_of[node] = sites[-1].key
            continue
        if node.op == "get_attr":  # a parameter or buffer read by a functional op
            key_of[node] = f"attr:{node.target}"
            continue
        operands = list(_tensor_args((node.args, node.kwargs)))
        if (
            node.op == "call_function"
            and node.target is operator.getitem
            and operands
            and _single_shape(operands[0]) is None
        ):
            key_of[node] = key_of[operands[0]]  # one output of a multi-output call
            continue
        out_shape = _single_shape(node)
        inputs = tuple(key_of[a] for a in operands)
        in_shape = (_single_shape(operands[0]) if operands else None) or shapes[0]
        other = tuple(_single_shape(a) or () for a in operands[1:])
        layer: _Layer | None = None
        reason = ""
        if node.op == "call_module":
            mod = modules[node.target]
            name, what = str(node.target), type(mod).__name__
            try:
                if out_shape is None:
                    raise _Unsupported("it returns more than one tensor")
                layer = _module_layer(mod, in_shape)
            except _Unsupported as e:
                reason = str(e)
        else:
            what = _target_name(node.target)
            try:
                layer = _function_layer(node.target, node.args, dict(node.kwargs), in_shape)
                if out_shape is None and layer.op != S.SPLIT:
                    raise _Unsupported("it returns more than one tensor")
            except _Unsupported as e:
                layer, reason = None, str(e)
            if layer is not None and layer.op == S.SPLIT:
                out_shape = in_shape  # the views, together
            kind = (layer.label or layer.op) if layer else what
            owner = _owner(node)
            name = f"{owner}.{kind}" if owner else kind
        key = f"node:{node.name}"
        sites.append(
            _Site(
                key,
                name,
                in_shape,
                out_shape or shapes[0],
                inputs,
                other,
                layer,
                what,
                reason,
                node.op == "call_module",
            )
        )
        key_of[node] = key
    return sites


def _shuffle_site(last: fx.Node, source_key: str, groups: int) -> _Site:
    shape = _single_shape(last)
    assert shape is not None  # checked by _shuffle_idioms
    owner = _owner(last)
    name = f"{owner}.{S.CHANNEL_SHUFFLE}" if owner else S.CHANNEL_SHUFFLE
    return _Site(
        f"node:{last.name}",
        name,
        shape,
        shape,
        (source_key,),
        (),
        _Layer(S.CHANNEL_SHUFFLE, dict(groups=groups)),
        "channel_shuffle (view idiom)",
    )


def _hook_sites(model: nn.Module, example: torch.Tensor) -> list[_Site]:
    """Leaf modules in call order, as a chain (functional ops are not seen)."""
    calls: list[tuple[str, nn.Module, tuple[int, ...], tuple[int, ...]]] = []
    handles = []

    def hook(name: str) -> Callable[..., None]:
        def record(mod: nn.Module, args: tuple[Any, ...], out: Any) -> None:
            x = args[0] if args else None
            if isinstance(x, torch.Tensor) and isinstance(out, torch.Tensor):
                calls.append((name, mod, tuple(x.shape), tuple(out.shape)))
            else:
                calls.append((name, mod, tuple(getattr(x, "shape", ())), ()))

        return record

    for name, mod in model.named_modules():
        if not any(True for _ in mod.children()):
            handles.append(mod.register_forward_hook(hook(name)))
    try:
        _run(model, example)
    finally:
        for h in handles:
            h.remove()
    sites: list[_Site] = []
    prev = NETWORK_INPUT
    for i, (name, mod, in_shape, out_shape) in enumerate(calls):
        layer: _Layer | None = None
        reason = ""
        try:
            if not in_shape or not out_shape:
                raise _Unsupported("its input or output is not a single tensor")
            layer = _module_layer(mod, in_shape)
        except _Unsupported as e:
            reason = str(e)
        key = f"call:{i}"
        # the model is itself one layer: named like a top-level functional op
        name = name or (layer.op if layer else type(mod).__name__)
        sites.append(
            _Site(
                key,
                name,
                in_shape or (1,),
                out_shape or (1,),
                (prev,),
                (),
                layer,
                type(mod).__name__,
                reason,
                True,
            )
        )
        prev = key
    return sites


def _unsupported_entry(name: str, what: str, reason: str) -> str:
    return f"{name} ({what}: {reason})" if reason else f"{name} ({what})"


def _check_layer(site: _Site) -> str:
    """Why a mapped layer cannot be costed after all ("" when it can)."""
    layer = site.layer
    if layer is None:
        return site.reason
    if layer.op in (S.ADD, S.MUL) and _elementwise_operands(site) is None:
        shapes = [site.in_shape, *site.other_shapes]
        return (
            f"broadcasting {layer.label or layer.op}: operands of shapes {shapes} (costed: "
            "equal shapes, a scalar, or one operand of the same rank with 1 in some dims)"
        )
    if layer.op == S.CONCAT and _concat_operands(site) is None:
        shapes = [site.in_shape, *site.other_shapes]
        return f"concat of operands of shapes {shapes} (costed: (N, C_i, H, W) along dim 1)"
    if layer.op == S.FLATTEN and site.out_shape != (site.in_shape[0], math.prod(site.in_shape[1:])):
        return f"reshape {site.in_shape} -> {site.out_shape} (only (N, -1) is costed)"
    return ""


def _elementwise_operands(site: _Site) -> tuple[tuple[int, ...], dict[str, Any]] | None:
    """(in_shape, keywords) of a traced sum or product; None when the formula cannot cost it.

    The operand of the output's shape becomes ``in_shape``, whichever side it was
    written on, and a broadcast one (an SE gate) ``other_shape``.
    """
    shapes = [site.in_shape, *site.other_shapes]
    if len(shapes) == 1:
        return site.in_shape, {"num_inputs": 1}  # with a Python scalar
    out = site.out_shape
    small = [s for s in shapes if s != out]
    if not small:
        return out, {"num_inputs": len(shapes)}
    other = small[0]
    if (
        len(shapes) != 2
        or len(small) != 1
        or len(other) != len(out)
        or any(o not in (1, d) for o, d in zip(other, out, strict=True))
    ):
        return None
    return out, {"num_inputs": 2, "other_shape": other}


def _concat_operands(site: _Site) -> dict[str, Any] | None:
    """Keywords of a traced channel concat; None when the formula cannot cost it."""
    shapes = [site.in_shape, *site.other_shapes]
    if len(shapes) < 2 or any(
        len(s) != 4 or (s[0], *s[2:]) != (shapes[0][0], *shapes[0][2:]) for s in shapes
    ):
        return None
    return {"num_inputs": len(shapes), "out_channels": sum(s[1] for s in shapes)}


def _to_specs(sites: list[_Site]) -> tuple[tuple[LayerSpec, ...], tuple[str, ...]]:
    """Name the calls (duplicates get _1, _2... in execution order), build and check specs."""
    used: set[str] = set()
    final: dict[str, str] = {NETWORK_INPUT: NETWORK_INPUT}
    specs: list[LayerSpec] = []
    unsupported: list[str] = []
    for site in sites:
        name, k = site.default_name, 1
        while name in used:
            name, k = f"{site.default_name}_{k}", k + 1
        used.add(name)
        final[site.key] = name
        # a parameter read by a functional op keeps its qualified name
        inputs = tuple(final.get(i, i.removeprefix("attr:")) for i in site.inputs)
        reason = _check_layer(site)
        if site.layer is None or reason:
            unsupported.append(_unsupported_entry(name, site.what, reason))
            continue
        layer = site.layer
        in_shape, kw = site.in_shape, layer.kw
        if layer.op in (S.ADD, S.MUL):
            in_shape, kw = _elementwise_operands(site)  # type: ignore[misc]  # checked above
        elif layer.op == S.CONCAT:
            kw = _concat_operands(site)  # type: ignore[assignment]  # checked above
        spec = LayerSpec(op=layer.op, in_shape=in_shape, name=name, inputs=inputs, **kw)
        try:
            formula_shape = count(spec).out_shape
        except UnsupportedLayerError as e:
            unsupported.append(_unsupported_entry(name, site.what, str(e)))
            continue
        # mean((2, 3)) without keepdim is a global pool whose output drops the 1x1.
        squeezed = layer.op == S.GLOBAL_AVGPOOL2D and site.out_shape == formula_shape[:2]
        if formula_shape != site.out_shape and not squeezed:
            raise TraceInternalError(
                f"internal error: the {layer.op} formula for layer {name!r} gives "
                f"out_shape={formula_shape}, but PyTorch produced {site.out_shape} "
                f"(in_shape={site.in_shape}); please report this as a roofnas bug"
            )
        specs.append(spec)
    return tuple(specs), tuple(unsupported)


class _Tracer(fx.Tracer):
    """fx's tracer; modules of the classes in ``opaque`` stay whole (call_module leaves)."""

    def __init__(self, opaque: frozenset[type[nn.Module]]) -> None:
        super().__init__()
        self.opaque = opaque
        self.failed: nn.Module | None = None  # the innermost module whose forward raised

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return type(m) in self.opaque or super().is_leaf_module(m, module_qualified_name)

    def call_module(
        self,
        m: nn.Module,
        forward: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            self.failed = self.failed or m
            raise


def _symbolic_trace(model: nn.Module) -> fx.GraphModule:
    """``fx.symbolic_trace``, except that a module without children whose forward fx cannot
    trace (Python arithmetic or an ``assert`` on shapes) is kept whole, as a module call,
    instead of failing the whole model; ``ShapeProp`` then runs it on real tensors."""
    opaque: set[type[nn.Module]] = set()
    while True:
        tracer = _Tracer(frozenset(opaque))
        try:
            graph = tracer.trace(model)
        except Exception:
            bad = tracer.failed
            if (
                bad is None
                or bad is model
                or type(bad) in opaque
                or any(True for _ in bad.children())
            ):
                raise
            opaque.add(type(bad))
            continue
        return fx.GraphModule(tracer.root, graph, type(model).__name__)


def _check_input_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = ()
    if not shape or not all(
        isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape
    ):
        raise ValueError(
            f"input_shape={input_shape!r} must be a tuple of positive ints, "
            f"batch first, e.g. {DEFAULT_INPUT_SHAPE}"
        )
    return shape


def trace_layers(
    model: nn.Module, input_shape: Sequence[int] = DEFAULT_INPUT_SHAPE
) -> tuple[tuple[LayerSpec, ...], tuple[str, ...]]:
    """The model's layers as ``LayerSpec``s in execution order, and what could not be costed.

    The model runs once in eval mode, without gradients, on one thread, on zeros
    of ``input_shape``; every module's training flag and the thread count are
    restored afterwards.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model={type(model).__name__} must be a torch.nn.Module")
    shape = _check_input_shape(input_shape)
    flags = [(m, m.training) for m in model.modules()]
    param = next(model.parameters(), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    device = param.device if param is not None else torch.device("cpu")
    example = torch.zeros(shape, dtype=dtype, device=device)
    threads = torch.get_num_threads()
    model.eval()
    try:
        # One thread: the pass only needs shapes, and on a shared, busy machine OpenMP
        # threads contending for cores made it 100x slower (4 s vs 0.03 s, ShuffleNet 64x64).
        torch.set_num_threads(1)
        with torch.no_grad():
            gm: fx.GraphModule | None = None
            if not fx.Tracer().is_leaf_module(model, ""):  # a bare nn.Conv2d has no graph
                try:
                    gm = _symbolic_trace(model)
                except Exception as e:  # e.g. data-dependent control flow
                    warnings.warn(
                        f"torch.fx could not trace {type(model).__name__} ({type(e).__name__}:"
                        f" {str(e).splitlines()[0] if str(e) else ''}); falling back to "
                        "forward hooks on leaf modules, which see a chain of modules only: "
                        "functional ops (x + y, torch.flatten, F.relu...) are invisible and "
                        "not counted",
                        stacklevel=3,
                    )
            sites = _hook_sites(model, example) if gm is None else _fx_sites(gm, example)
    finally:
        torch.set_num_threads(threads)
        for m, flag in flags:
            m.training = flag
    specs, unsupported = _to_specs(sites)
    # A module with weights called twice (weight sharing) would count its params twice.
    weighted = (S.CONV2D, S.LINEAR, S.BATCHNORM2D)
    calls = Counter(
        s.default_name
        for s in sites
        if s.module_call and s.layer is not None and s.layer.op in weighted
    )
    shared = sorted(n for n, c in calls.items() if c > 1)
    if shared:
        warnings.warn(
            f"modules with weights called more than once are costed once per "
            f"call, params included: {shared}",
            stacklevel=3,
        )
    return specs, unsupported


def profile(
    model: nn.Module,
    input_shape: Sequence[int] = DEFAULT_INPUT_SHAPE,
    hw: str | HardwareProfile = "t4",
    precision: str = "fp32",
    runtime: str = "eager",
    *,
    strict: bool = False,
) -> CostReport:
    """Trace ``model`` on zeros of ``input_shape`` and cost every layer.

    Modules and ops without a formula are listed in ``CostReport.unsupported``
    as ``"name (Type: reason)"``; with ``strict=True`` they raise
    ``UnsupportedLayerError`` instead.
    """
    specs, unsupported = trace_layers(model, input_shape)
    if unsupported and (strict or not specs):
        why = "strict=True" if specs else "nothing else could be costed"
        raise UnsupportedLayerError(
            f"{len(unsupported)} layer(s) of {type(model).__name__} have no cost formula "
            f"({why}): {', '.join(unsupported)}"
        )
    return analyze(
        specs, hw, precision, runtime, input_shape=tuple(input_shape), unsupported=unsupported
    )
