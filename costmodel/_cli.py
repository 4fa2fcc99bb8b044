"""``python -m costmodel FILE.py:FACTORY``: per-layer costs of any model on a hardware profile.

Thin by design: it loads the model, calls ``costmodel.profile`` and prints the
report. ``python -m costmodel validate ...`` samples architectures of a search
space (this is command-line glue, so it may reach up to ``searchspace``) and
hands them to ``costmodel._validate``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

import searchspace
from costmodel import _user_model as user_model
from costmodel._formulas import UnsupportedLayerError
from costmodel._measure import CLOCKS, DEFAULT_CLOCK, DEFAULT_MIN_S
from costmodel._plot import plot_roofline_layers
from costmodel._report import CostReport
from costmodel._trace import DEFAULT_INPUT_SHAPE, TraceInternalError, profile
from costmodel._units import PRECISIONS
from hw_profiles import RUNTIMES, ProfileError, available, load

CONVENTIONS = (
    "Conventions: MACs = multiply-accumulates (what ZOMI's lecture on model "
    'miniaturization calls "FLOPs"); '
    "FLOPs = 2 x MACs; MAC bytes = memory access cost (input read + output written + "
    "weights read, ShuffleNet V2) at the chosen precision; intensity = (FLOPs + other "
    "element-wise ops) / MAC bytes; latency = roofline time per kernel plus the "
    "runtime's per-kernel overhead, for one forward pass of the whole batch."
)


_DEFAULT_INPUT = ",".join(map(str, DEFAULT_INPUT_SHAPE))


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
        default=_DEFAULT_INPUT,
        metavar="N,C,H,W",
        help=f"input shape, batch first, comma-separated positive ints (default: {_DEFAULT_INPUT})",
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
        choices=RUNTIMES,
        help="how kernels are launched: eager PyTorch, a replayed CUDA graph, or a fused "
        "deployment runtime; sets the per-kernel overhead (default: eager)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="fail (exit 1) when a module or op has no cost formula, instead of "
        "listing it as unsupported",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print the report as JSON (CostReport.to_dict()) instead of a table",
    )
    p.add_argument(
        "--plot",
        metavar="FILE.png",
        help="also draw the layers on the profile's roofline chart into FILE.png",
    )
    return p


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(d < 1 for d in shape):
        raise UsageError(
            f"--input={text!r} must be comma-separated positive ints, batch "
            f"first, e.g. {_DEFAULT_INPUT}"
        )
    return shape


def load_factory(target: str) -> Any:
    """The callable named by ``FILE.py:FACTORY``."""
    try:
        return user_model.load_factory(target)
    except ValueError as e:
        raise UsageError(str(e)) from None


def build_model(target: str) -> Any:
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
        raise UsageError(f"factory {name!r}{sig} must be callable without arguments: {e}") from e
    if not isinstance(model, torch.nn.Module):
        raise UsageError(f"factory {name!r} returned {type(model).__name__}, not a torch.nn.Module")
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
    head = (
        "name",
        "kind",
        "output shape",
        "params",
        "MACs",
        "MAC bytes",
        "intensity",
        "bound",
        "latency_us",
    )
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
        return "  ".join(
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()

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
        f'  MACs                 {_int(t.macs)} (multiply-accumulates, the lecture\'s "FLOPs")',
        f"  FLOPs                {_int(t.flops)} (2 x MACs)",
        f"  other ops            {_int(t.other_ops)} (bias adds, activations, pooling, adds)",
        f"  MAC bytes            {_bytes(t.mac_bytes)} at {rep.precision}",
        "  model size           "
        + ", ".join(f"{p} {_bytes(b)}" for p, b in t.model_size_bytes.items()),
        f"  peak activations     {_bytes(t.peak_activation_bytes)} at {rep.precision}",
        f"  latency              {t.latency_s * 1e3:.4f} ms (compute {t.compute_s * 1e3:.4f}"
        f" ms, memory {t.memory_s * 1e3:.4f} ms, fixed costs {t.overhead_s * 1e3:.4f} ms;"
        " sums over layers, which overlap)",
    ]
    if rep.unsupported:
        lines.append(
            f"  NOT COSTED           {len(rep.unsupported)}: " + "; ".join(rep.unsupported)
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "validate":
        return validate_main(args_list[1:])
    args = _parser().parse_args(args_list)  # exits 2 on bad options, naming them
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
    except TraceInternalError:
        raise
    except ValueError as e:  # e.g. the model fails on this input shape
        print(f"error: {e}", file=sys.stderr)
        return 2
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    if rep.unsupported:
        print(
            f"warning: {len(rep.unsupported)} layer(s) have no cost formula and are NOT "
            f"counted: {'; '.join(rep.unsupported)}",
            file=sys.stderr,
        )
    if args.plot:
        try:
            plot_roofline_layers(rep, hw, args.plot, title=f"{args.model} on {hw.name}")
        except (OSError, ValueError) as e:
            print(f"error: --plot={args.plot!r}: {e}", file=sys.stderr)
            return 2
    print(rep.to_json(indent=2) if args.json else format_table(rep))
    return 0


# --------------------------------------------------------------------------- validate

# The held-out set (drawn once by experiments/heldout_networks.py from families that
# calibration and the development sets never sample): for reporting only.
_EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
HELDOUT_FILE = _EXPERIMENTS / "heldout_networks.txt"
# The former held-out list: it guided a design decision, so it is a development set now.
DEV_LIST_FILE = _EXPERIMENTS / "dev_networks_2026-11-30.txt"
VALIDATION_SETS = ("dev", "dev-list", "heldout")


def parse_network(line: str, base_dir: Path = Path()) -> Any:
    """A network from its string: ``ofa:...`` (OFANet), ``|op~0|+...`` (NB201Net), a
    module ``PATH.py:FACTORY CxHxW`` (``PATH`` relative to ``base_dir`` when it is not
    found from here) or a ``searchspace.Architecture`` string."""
    model, _, shape = line.partition(" ")
    if model.rpartition(":")[0].endswith(".py"):
        if not shape.strip():
            raise ValueError(f"{line!r}: a module needs its input shape: PATH.py:FACTORY CxHxW")
        return user_model.ModuleNetwork(model, user_model.parse_shape(shape.strip()), base_dir)
    if line.startswith("ofa:"):
        return searchspace.OFANet.from_string(line)
    if line.startswith("|"):
        return searchspace.NB201Net.from_string(line)
    return searchspace.Architecture.from_string(line)


def read_networks(path: Path) -> list[Any]:
    """The networks listed in ``path``, one string a line (``#`` starts a comment line)."""
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    nets = []
    for i, ln in enumerate(lines, 1):
        if ln and not ln.startswith("#"):
            try:
                nets.append(parse_network(ln, path.parent))
            except ValueError as e:
                raise ValueError(f"{path}:{i}: {e}") from e
    return nets


def _validate_parser(validation_seed: int) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m costmodel validate",
        description="Measure random architectures of a search space on this machine and "
        "compare with the latency the cost model predicts (rank correlation, errors, plot).",
    )
    p.add_argument("--hw", required=True, help="profile: built-in name or TOML path")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument(
        "--space",
        default="cifar",
        help="search space: a name shipped with searchspace "
        f"({', '.join(searchspace.available_spaces())}) or a TOML path (default cifar)",
    )
    p.add_argument(
        "--n", type=int, default=40, help="architectures of --space (default 40), for --set dev"
    )
    p.add_argument(
        "--set",
        dest="net_set",
        choices=VALIDATION_SETS,
        default="dev",
        help="dev: --n architectures of --space drawn with --seed (the development "
        "set design decisions were checked on); dev-list: the development list "
        f"experiments/{DEV_LIST_FILE.name} (NB201, OFA and zoo networks; the former "
        "held-out list); heldout: the frozen list experiments/heldout_networks.txt "
        "(the same families, networks no decision has seen; report only)",
    )
    p.add_argument(
        "--networks",
        default=None,
        help="a file of networks, one a line (replaces --set): NAS-Bench-201 cells "
        "(|op~0|+...), ofa:... subnets, architecture strings, or your own modules as "
        "FILE.py:FACTORY CxHxW (FILE relative to the list)",
    )
    p.add_argument(
        "--clock",
        choices=CLOCKS,
        default=DEFAULT_CLOCK,
        help="CPU clock: wall (time.perf_counter, default) or thread (the "
        "thread's CPU time, one thread)",
    )
    p.add_argument(
        "--batch",
        type=int,
        action="append",
        default=None,
        help="batch size; repeat for several (default 1)",
    )
    p.add_argument("--runtime", choices=RUNTIMES, default="eager")
    p.add_argument("--seed", type=int, default=validation_seed)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="interleaved measurement rounds (default 100, 20 above batch 8)",
    )
    p.add_argument(
        "--repeats", type=int, default=1, help="samples per network per round (default %(default)s)"
    )
    p.add_argument(
        "--min-ms",
        type=float,
        default=DEFAULT_MIN_S * 1e3,
        help="shortest timed sample in ms; faster networks loop (default %(default)s)",
    )
    p.add_argument(
        "--quantile",
        type=float,
        default=0.5,
        help="the quantile of the samples taken as the latency (default %(default)s, "
        "the median; the lower decile is reported beside it)",
    )
    p.add_argument("--out", default="experiments/results", help="output folder")
    p.add_argument("--json", action="store_true", help="print the summaries as JSON")
    return p


def _validate_usage_error(args: argparse.Namespace) -> str | None:
    """What is wrong with the validate arguments (None when nothing is), naming the value."""
    for key in ("n", "threads", "rounds", "repeats"):
        if getattr(args, key) is not None and getattr(args, key) < 1:
            return f"--{key}={getattr(args, key)} must be >= 1"
    if not args.min_ms > 0:
        return f"--min-ms={args.min_ms:g} must be > 0"
    if not 0.0 <= args.quantile <= 1.0:
        return f"--quantile={args.quantile} must be in [0, 1]"
    if any(b < 1 for b in args.batch or [1]):
        return f"--batch={args.batch} must be >= 1"
    try:
        searchspace.space_path(args.space)
    except searchspace.SpaceError as e:
        return f"--space: {e}"
    try:
        load(args.hw)
    except ProfileError as e:
        return f"--hw: {e}"
    if args.networks is not None and not Path(args.networks).is_file():
        return f"--networks={args.networks!r} is not a file"
    return None


def _print_batch(b: int, summary: Any, meta: dict[str, Any], paths: list[Path]) -> None:
    s = summary
    print(
        f"batch {b}: n={s.n} Spearman {s.spearman:.3f} Kendall {s.kendall:.3f} "
        f"median |err| {s.median_abs_error:.1%} within10 {s.within_10:.0%} "
        f"within25 {s.within_25:.0%} -> {paths[1]}"
    )
    if meta["speed_factor"]:
        n_ = json.loads(paths[0].read_text())["summary_speed_normalized"]
        print(
            f"  at calibration speed (x{meta['speed_factor']:.3f}): Spearman "
            f"{n_['spearman']:.3f} median |err| {n_['median_abs_error']:.1%}"
        )


def validate_main(argv: Sequence[str]) -> int:
    """``python -m costmodel validate``: exit 0 ok, 2 usage error, 1 no CUDA device."""
    from costmodel import _validate as V  # lazy: scipy and the measuring code

    argv = list(argv)
    args = _validate_parser(V.VALIDATION_SEED).parse_args(argv)
    error = _validate_usage_error(args)
    if error:
        print(f"validate: {error}", file=sys.stderr)
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print("validate: --device=cuda but no CUDA device is available", file=sys.stderr)
        return 1
    command = "python -m costmodel validate " + " ".join(argv)
    listed = {
        "heldout": (HELDOUT_FILE, "held-out set", "_heldout"),
        "dev-list": (DEV_LIST_FILE, "development list", "_devlist"),
    }
    if args.networks is not None or args.net_set in listed:
        path = Path(args.networks) if args.networks is not None else listed[args.net_set][0]
        try:
            archs, space, tag = read_networks(path), str(path), "_" + path.stem
        except ValueError as e:
            print(f"validate: --networks: {e}", file=sys.stderr)
            return 2
        if args.networks is None:
            _, what, tag = listed[args.net_set]
            space = f"{what} ({path.name})"
    else:
        archs, space, tag = (
            searchspace.sample_architectures(args.space, args.n, args.seed),
            (f"development set: {args.n} of {args.space}"),
            "",
        )
    try:  # before measuring: minutes of timings must not be lost to a missing folder
        Path(args.out).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(
            f"validate: --out={args.out!r}: cannot create it ({e.strerror or e})", file=sys.stderr
        )
        return 2
    reference = searchspace.reference_architecture()
    results = {}
    for b in args.batch or [1]:
        points, summary, meta = V.validate(
            args.hw,
            args.device,
            archs,
            b,
            args.runtime,
            reference=reference,
            seed=args.seed,
            threads=args.threads,
            rounds=args.rounds,
            repeats=args.repeats,
            min_s=args.min_ms / 1e3,
            quantile=args.quantile,
            space=space,
            clock=args.clock,
        )
        stem = f"validation_{args.device}{tag}_b{b}" + (
            "" if args.runtime == "eager" else f"_{args.runtime}"
        )
        paths = V.write_results(points, summary, meta, Path(args.out), stem, command)
        results[f"b{b}"] = {
            "summary": summary.to_dict(),
            "speed_factor": meta["speed_factor"],
            "files": [str(p) for p in paths],
        }
        if not args.json:
            _print_batch(b, summary, meta, paths)
    if args.json:
        print(json.dumps(results))
    return 0
