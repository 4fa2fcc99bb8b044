"""``python -m costmodel FILE.py:FACTORY``: per-layer costs of any model on a hardware profile.

Thin by design: it loads the model, calls ``costmodel.profile`` and prints the
report. ``python -m costmodel validate ...`` is handed to ``costmodel._validate``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from costmodel._formulas import UnsupportedLayerError
from costmodel._report import CostReport
from costmodel._units import PRECISIONS
from hw_profiles import ProfileError, available

CONVENTIONS = (
    "Conventions: MACs = multiply-accumulates (what the seed lecture calls \"FLOPs\"); "
    "FLOPs = 2 x MACs; MAC bytes = memory access cost (input read + output written + "
    "weights read, ShuffleNet V2) at the chosen precision; intensity = (FLOPs + other "
    "element-wise ops) / MAC bytes; latency = roofline time per kernel plus the "
    "runtime's per-kernel overhead, for one forward pass of the whole batch."
)


class UsageError(Exception):
    """Bad command-line input: reported on stderr with exit code 2."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m costmodel",
        description="Exact params, MACs, memory access and roofline latency of a PyTorch "
        "model on a hardware profile, layer by layer. "
        "(Subcommand: `python -m costmodel validate --help` compares predicted with "
        "measured latency.)",
        epilog=CONVENTIONS + " Exit codes: 0 ok, 1 failure, 2 usage error.",
    )
    p.add_argument(
        "model",
        metavar="FILE.py:FACTORY",
        help="a Python file and the name of a callable in it that returns a torch.nn.Module "
        "when called without arguments (a module class with no required arguments works)",
    )
    p.add_argument(
        "--input",
        default="1,3,224,224",
        metavar="N,C,H,W",
        help="input shape, batch first, comma-separated positive ints (default: 1,3,224,224)",
    )
    p.add_argument(
        "--hw",
        default="t4",
        metavar="NAME|FILE.toml",
        help=f"hardware profile: a built-in name ({', '.join(available())}) or the path to "
        "a profile TOML file (default: t4)",
    )
    p.add_argument(
        "--precision",
        default="fp32",
        choices=PRECISIONS,
        help="element precision for bytes and the compute peak (default: fp32)",
    )
    p.add_argument(
        "--runtime",
        default="eager",
        choices=("eager", "graph", "fused"),
        help="how kernels are launched: eager PyTorch, a replayed CUDA graph, or a fused "
        "deployment runtime; sets the per-kernel overhead (default: eager)",
    )
    p.add_argument("--strict", action="store_true",
                   help="fail (exit 1) when a module or op has no cost formula, instead of "
                   "listing it as unsupported")
    p.add_argument("--json", action="store_true",
                   help="print the report as JSON (CostReport.to_dict()) instead of a table")
    p.add_argument("--plot", metavar="FILE.png",
                   help="also draw the layers on the profile's roofline chart into FILE.png")
    return p


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(d < 1 for d in shape):
        raise UsageError(f"--input={text!r} must be comma-separated positive ints, batch "
                         "first, e.g. 1,3,224,224")
    return shape


def load_factory(target: str) -> Any:
    """The callable named by ``FILE.py:FACTORY``."""
    path_text, sep, name = target.rpartition(":")
    if not sep or not path_text or not name:
        raise UsageError(f"model={target!r} must be FILE.py:FACTORY, e.g. mynet.py:build")
    path = Path(path_text)
    if not path.is_file():
        raise UsageError(f"model file {path_text!r} does not exist")
    mod_name = f"_costmodel_user_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"model file {path_text!r} cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.resolve().parent))  # so the file can import its neighbours
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise UsageError(f"importing model file {path_text!r} failed: "
                         f"{type(e).__name__}: {e}") from e
    finally:
        sys.path.remove(str(path.resolve().parent))
    factory = getattr(module, name, None)
    if factory is None or not callable(factory):
        found = sorted(k for k, v in vars(module).items()
                       if callable(v) and not k.startswith("_")
                       and getattr(v, "__module__", None) == mod_name)
        raise UsageError(f"factory {name!r} is not a callable in {path_text!r}; "
                         f"callables defined there: {found}")
    return factory


def build_model(target: str) -> Any:
    import torch.nn as nn

    factory = load_factory(target)
    name = target.rpartition(":")[2]
    try:
        model = factory()
    except TypeError as e:
        sig = ""
        try:
            sig = str(inspect.signature(factory))
        except (TypeError, ValueError):
            pass
        raise UsageError(f"factory {name!r}{sig} must be callable without arguments: {e}") \
            from e
    if not isinstance(model, nn.Module):
        raise UsageError(f"factory {name!r} returned {type(model).__name__}, "
                         "not a torch.nn.Module")
    return model


def _int(n: int) -> str:
    return f"{n:,}"


def _bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n:,} B ({n / size:.2f} {unit})"
    return f"{n:,} B"


def format_table(rep: CostReport) -> str:
    """The per-layer table and the totals, as printed by the command line."""
    head = ("name", "kind", "output shape", "params", "MACs", "MAC bytes", "intensity",
            "bound", "latency_us")
    rows = [
        (
            lay.name,
            lay.op,
            "x".join(map(str, lay.out_shape)),
            _int(lay.params),
            _int(lay.macs),
            _int(lay.mac_bytes),
            f"{lay.intensity:.2f}",
            lay.bound,
            f"{lay.latency_s * 1e6:.2f}",
        )
        for lay in rep.layers
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    left = {0, 1, 2, 7}

    def fmt(row: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip()

    t = rep.total
    lines = [
        CONVENTIONS,
        f"hw={rep.hw} precision={rep.precision} runtime={rep.runtime} "
        f"input={'x'.join(map(str, rep.input_shape))}",
        "",
        fmt(head),
        fmt(["-" * w for w in widths]),
        *(fmt(r) for r in rows),
        "",
        "totals:",
        f"  params               {_int(t.params)} (of which bias {_int(t.bias_params)})",
        f"  MACs                 {_int(t.macs)} (multiply-accumulates, the seed's \"FLOPs\")",
        f"  FLOPs                {_int(t.flops)} (2 x MACs)",
        f"  other ops            {_int(t.other_ops)} (bias adds, activations, pooling, adds)",
        f"  MAC bytes            {_bytes(t.mac_bytes)} at {rep.precision}",
        "  model size           " + ", ".join(f"{p} {_bytes(b)}"
                                               for p, b in t.model_size_bytes.items()),
        f"  peak activations     {_bytes(t.peak_activation_bytes)} at {rep.precision}",
        f"  latency              {t.latency_s * 1e3:.4f} ms (compute {t.compute_s * 1e3:.4f}"
        f" ms, memory {t.memory_s * 1e3:.4f} ms, fixed costs {t.overhead_s * 1e3:.4f} ms;"
        " sums over layers, which overlap)",
    ]
    if rep.unsupported:
        lines.append(f"  NOT COSTED           {len(rep.unsupported)}: "
                     + "; ".join(rep.unsupported))
    return "\n".join(lines)


def _validate(argv: list[str]) -> int:
    from costmodel._validate import main  # lazy: it imports the search space and timers

    return int(main(argv) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "validate":
        return _validate(args_list[1:])
    args = _parser().parse_args(args_list)  # exits 2 on bad options, naming them

    from costmodel._profile import ProfileInternalError, profile
    from hw_profiles import load

    try:
        shape = parse_shape(args.input)
        hw = load(args.hw)
        hw.peak(args.precision)
        model = build_model(args.model)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rep = profile(model, shape, hw, args.precision, args.runtime, strict=args.strict)
    except (UsageError, ProfileError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except UnsupportedLayerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except ProfileInternalError:
        raise
    except ValueError as e:  # e.g. the model fails on this input shape
        print(f"error: {e}", file=sys.stderr)
        return 2
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    if rep.unsupported:
        print(f"warning: {len(rep.unsupported)} layer(s) have no cost formula and are NOT "
              f"counted: {'; '.join(rep.unsupported)}", file=sys.stderr)
    if args.plot:
        from costmodel._plot import plot_roofline_layers

        try:
            plot_roofline_layers(rep, hw, args.plot, title=f"{args.model} on {hw.name}")
        except (OSError, ValueError) as e:
            print(f"error: --plot={args.plot!r}: {e}", file=sys.stderr)
            return 2
    print(rep.to_json(indent=2) if args.json else format_table(rep))
    return 0
