"""``python -m hw_profiles list|show|calibrate|fit|rescale``: inspect, measure, fit or rescale
hardware profiles.

Exit codes: 0 ok, 2 usage error (unknown profile, bad file, bad arguments),
1 failure (whatever ``calibrate`` or ``rescale`` reports while measuring).

``calibrate`` is command-line glue, so it may reach up the layers: it draws the
calibration networks from a search space (``searchspace``) and hands them to
the calibration in ``costmodel._calibrate``, which imports torch; both are
imported only when the command runs, so ``list`` and ``show`` stay fast.
``fit`` likewise: it turns each CSV row's model into layer specs (a
``PATH.py:FACTORY`` traced by ``costmodel``'s tracer, or a ``searchspace``
architecture string) and hands them to ``costmodel._fit.fit_networks``; rows
it cannot use are reported with line number and reason, and the fit proceeds
with the rest when at least ``MIN_ROWS`` remain.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import hashlib
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hw_profiles._precision import FLOAT_PRECISIONS, PRECISIONS
from hw_profiles._schema import (
    KERNEL_CLASSES,
    RUNTIMES,
    HardwareProfile,
    ProfileError,
    available,
    load,
    load_fresh,
)
from hw_profiles._toml import profile_to_toml

if TYPE_CHECKING:  # annotations only: costmodel sits above hw_profiles
    from costmodel._fit import MeasuredNetwork, NetworkFit
    from costmodel._spec import LayerSpec

_GIB = 2**30


def _ops_unit(precision: str) -> str:
    return "TFLOPS" if precision in FLOAT_PRECISIONS else "TOPS"


def _tera(value: float | None) -> str:
    return "-" if value is None else f"{value / 1e12:g}"


def _ridge_points(p: HardwareProfile) -> dict[str, float]:
    """ops/byte where each precision's roofline turns flat (peak / bandwidth)."""
    return {k: p.ridge_point(k) for k in PRECISIONS if k in p.peak_ops_per_s}


def _summary(p: HardwareProfile) -> dict[str, Any]:
    return {
        "name": p.name,
        "display_name": p.display_name,
        "device_type": p.device_type,
        "peak_ops_per_s": dict(p.peak_ops_per_s),
        "bandwidth_bytes_per_s": p.bandwidth_bytes_per_s,
        "memory_bytes": p.memory_bytes,
        "cache_bytes": p.cache_bytes,
        "ridge_point_ops_per_byte": _ridge_points(p),
    }


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append(
            "  ".join(
                str(c).rjust(w) if i else str(c).ljust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            ).rstrip()
        )
    return "\n".join(lines)


def _load_or_usage(name_or_path: str) -> HardwareProfile:
    try:
        return load(name_or_path)
    except ProfileError as e:
        raise _UsageError(str(e)) from None


class _UsageError(Exception):
    pass


def _cmd_list(args: argparse.Namespace) -> int:
    profiles = [load(n) for n in available()]
    if args.json:
        print(json.dumps([_summary(p) for p in profiles], indent=2))
        return 0
    header = [
        "name",
        "type",
        "fp32 TFLOPS",
        "fp16 TFLOPS",
        "int8 TOPS",
        "GB/s",
        "GiB",
        "ridge fp32 FLOP/B",
        "ridge fp16 FLOP/B",
    ]
    rows = []
    for p in profiles:
        peaks = p.peak_ops_per_s
        rows.append(
            [
                p.name,
                p.device_type,
                _tera(peaks.get("fp32")),
                _tera(peaks.get("fp16")),
                _tera(peaks.get("int8")),
                f"{p.bandwidth_bytes_per_s / 1e9:g}",
                f"{p.memory_bytes / _GIB:g}",
                f"{p.ridge_point('fp32'):.1f}",
                f"{p.ridge_point('fp16'):.1f}" if "fp16" in peaks else "-",
            ]
        )
    print(_table(header, rows))
    print(
        "\nPeaks are dense datasheet figures (fp16 = tensor cores with fp32 accumulate where "
        "present); ridge point = peak / bandwidth. `show NAME` gives sources and details."
    )
    return 0


def _show_json(p: HardwareProfile) -> dict[str, Any]:
    d = p.to_dict()
    d["path"] = p.path
    d["ridge_point_ops_per_byte"] = _ridge_points(p)
    d["efficiency_by_kernel_class"] = {
        prec: {
            kc: dict(zip(("compute", "memory"), p.efficiency(kc, prec), strict=True))
            for kc in KERNEL_CLASSES
        }
        for prec in p.peak_ops_per_s
    }
    return d


def _has_efficiencies(p: HardwareProfile) -> bool:
    return bool(
        p.compute_efficiency
        or p.memory_efficiency
        or p.compute_efficiency_by_precision
        or p.memory_efficiency_by_precision
    )


def _cmd_show(args: argparse.Namespace) -> int:
    p = _load_or_usage(args.profile)
    if args.json:
        print(json.dumps(_show_json(p), indent=2))
        return 0
    out = [
        f"{p.name}: {p.display_name}" if p.display_name else p.name,
        f"  file:         {p.path}",
        f"  device type:  {p.device_type}",
        f"  source:       {p.source}",
    ]
    if p.notes:
        out.append(f"  notes:        {p.notes}")
    out += [
        f"  memory:       {p.memory_bytes / _GIB:g} GiB ({p.memory_bytes:,} bytes)",
        f"  bandwidth:    {p.bandwidth_bytes_per_s / 1e9:g} GB/s",
        # GPUs' last shared level is L2, server CPUs' is L3.
        f"  cache ({'L3' if p.device_type == 'cpu' else 'L2'}):   "
        f"{p.cache_bytes / 2**20:g} MiB ({p.cache_bytes:,} bytes)",
        "",
    ]
    peak_rows = [
        [k, f"{v / 1e12:g} {_ops_unit(k)}", f"{p.ridge_point(k):.1f}"]
        for k, v in p.peak_ops_per_s.items()
    ]
    out.append(_table(["precision", "peak", "ridge point (ops/byte)"], peak_rows))
    out.append("")
    rt_rows = [
        [name, f"{rt.kernel_overhead_s * 1e6:g}", f"{rt.host_overhead_s * 1e6:g}"]
        for name, rt in p.runtimes.items()
    ]
    out.append(_table(["runtime", "kernel overhead (us)", "host overhead (us)"], rt_rows))
    out.append("")
    if _has_efficiencies(p):
        precs = list(p.peak_ops_per_s)
        header = ["kernel class"] + [f"{q} compute/memory" for q in precs]
        eff_rows = [
            [kc] + ["{:.2f}/{:.2f}".format(*p.efficiency(kc, q)) for q in precs]
            for kc in KERNEL_CLASSES
        ]
        out.append("efficiency (fraction of peak compute / bandwidth reached):")
        out.append(_table(header, eff_rows))
    else:
        out.append(
            "efficiency: none set (1.0: layers run at the roofline; "
            "`python -m hw_profiles calibrate` measures them)"
        )
    print("\n".join(out))
    return 0


def _calibrate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m hw_profiles calibrate",
        description="Measure this machine (bandwidth, peak per precision, per-op cost per "
        "runtime, per-kernel-class efficiency over a sweep of shapes), fit the latency "
        "model's parameters and write a hardware profile TOML.",
    )
    p.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu", help="what to calibrate (default: cpu)"
    )
    p.add_argument("--out", required=True, help="TOML file to write")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads while measuring, recorded in the profile (default 1)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a smaller sweep (about a minute on a CPU); for smoke tests",
    )
    p.add_argument("--name", default=None, help="profile name (default calibrated-<device>)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument(
        "--space",
        default="cifar",
        help="search space of the calibration networks (drawn with the calibration "
        "seed): a name shipped with searchspace or a TOML path (default cifar)",
    )
    p.add_argument(
        "--networks",
        type=int,
        default=None,
        help="calibration networks (default 40, --quick 4; 0: none)",
    )
    p.add_argument(
        "--no-op-chains",
        dest="op_chains",
        action="store_false",
        help="do not time chains of one streaming op (BN, ReLU, add, pools) as "
        "networks; by default they show the fit what such an op costs inside a "
        "network, which a kernel timed alone overstates",
    )
    p.add_argument(
        "--clock",
        choices=("wall", "thread"),
        default="wall",
        help="CPU timing clock: wall (time.perf_counter, default) or thread (the "
        "thread's CPU time, one thread); validate with the same",
    )
    p.add_argument(
        "--raw",
        default=None,
        help="also write the raw measurements (specs and times) to this JSON file",
    )
    return p


def _calibrate_usage_error(args: argparse.Namespace) -> str | None:
    """What is wrong with the calibrate arguments (None when nothing is), naming the value."""
    if args.threads < 1:
        return f"--threads={args.threads} must be >= 1"
    if Path(args.out).suffix != ".toml":
        return f"--out={args.out!r} must end in .toml"
    if args.networks is not None and args.networks < 0:
        return f"--networks={args.networks} must be >= 0"
    return None


def _prepare_output_folders(args: argparse.Namespace) -> str | None:
    """Create the folders of --out and --raw before measuring: minutes of measurements must
    not be lost to a missing folder at the end. Returns what is wrong, naming the value."""
    for flag, value in (("--out", args.out), ("--raw", args.raw)):
        if not value:
            continue
        try:
            Path(value).parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            return f"{flag}={value!r}: cannot create its folder ({e.strerror or e})"
    return None


def calibrate_main(argv: Sequence[str]) -> int:
    """``python -m hw_profiles calibrate``: measure, fit and write a profile."""
    args = _calibrate_parser().parse_args(list(argv))
    error = _calibrate_usage_error(args)
    if error:
        print(f"calibrate: {error}", file=sys.stderr)
        return 2
    import searchspace  # glue: the search space lends the calibration networks
    from costmodel import _calibrate as C  # lazy: it imports torch

    try:
        space = searchspace.load_space(args.space)
    except searchspace.SpaceError as e:
        print(f"calibrate: --space: {e}", file=sys.stderr)
        return 2
    error = _prepare_output_folders(args)
    if error:
        print(f"calibrate: {error}", file=sys.stderr)
        return 2
    n = args.networks if args.networks is not None else (4 if args.quick else 40)
    log = (lambda s: print(s, file=sys.stderr)) if args.json else print
    try:
        hw, calib = C.calibrate(
            args.device,
            threads=args.threads,
            quick=args.quick,
            name=args.name,
            log=log,
            raw_out=Path(args.raw) if args.raw else None,
            networks=searchspace.sample_architectures(space, n, C.CALIBRATION_SEED) if n else (),
            networks_from=f"{args.space} (seed {C.CALIBRATION_SEED})",
            reference=searchspace.reference_architecture(),
            clock=args.clock,
            chains=args.op_chains,
        )
    except RuntimeError as e:
        print(f"calibrate: {e}", file=sys.stderr)
        return 1
    header = (
        "Written by `python -m hw_profiles calibrate` (costmodel/_calibrate.py).\n"
        "Measured ceilings; efficiencies, overheads and saturation constants fitted."
    )
    out = Path(args.out)
    out.write_text(profile_to_toml(hw, calib, header))
    loaded = load_fresh(out)  # the file must load with the schema it was written for
    if args.json:
        print(json.dumps({"out": str(out), "profile": loaded.to_dict(), "calibration": calib}))
    else:
        print(f"wrote {out}")
    return 0


# --- fit: a profile from a CSV of measured whole networks ---------------------------------

COLUMNS = ("model", "input_shape", "batch", "precision", "runtime", "latency_s")
MIN_ROWS = 3  # fewer measured networks than this cannot pin even the host costs


class RowError(ValueError):
    """A CSV row the fit cannot use; the message names the field and its value."""


@dataclass(frozen=True)
class _Lowered:
    specs: tuple[LayerSpec, ...]
    extra_kernels: int


def parse_shape(text: str) -> tuple[int, int, int]:
    parts = text.strip().lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise RowError(f"input_shape={text!r} must be CxHxW with positive integers, e.g. 3x32x32")
    c, h, w = (int(p) for p in parts)
    return c, h, w


def _positive_int(text: str, field: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise RowError(f"{field}={text!r} must be an integer >= 1") from None
    if v < 1:
        raise RowError(f"{field}={text!r} must be an integer >= 1")
    return v


def _latency(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise RowError(f"latency_s={text!r} is not a number") from None
    if not math.isfinite(v) or v <= 0:
        raise RowError(f"latency_s={text!r} must be a finite number > 0")
    return v


class ModelResolver:
    """Layer specs of a row's model, cached per (model, shape, batch)."""

    def __init__(self, csv_dir: Path) -> None:
        self.csv_dir = csv_dir
        self._cache: dict[tuple[str, tuple[int, int, int], int], _Lowered] = {}

    def lower(self, model: str, shape: tuple[int, int, int], batch: int) -> _Lowered:
        key = (model, shape, batch)
        if key not in self._cache:
            self._cache[key] = self._lower(model, shape, batch)
        return self._cache[key]

    def _lower(self, model: str, shape: tuple[int, int, int], batch: int) -> _Lowered:
        import searchspace  # glue: architecture strings belong to the search space

        text = model.strip()
        if text.startswith("|") or text.startswith("ofa:"):
            family = searchspace.NB201Net if text.startswith("|") else searchspace.OFANet
            try:
                net = family.from_string(text)
            except ValueError as e:
                raise RowError(f"model={text!r}: {e}") from None
            _same_shape(net.input_shape, shape)
            # HELP and most users time these networks with the family's own code
            return _Lowered(net.eager_layers(batch), net.eager_extra_kernels())
        if ".py:" in text:
            return _Lowered(self._trace(text, shape, batch), 0)
        try:
            arch = searchspace.Architecture.from_string(text)
        except (ValueError, KeyError, TypeError) as e:
            raise RowError(
                f"model={text!r} is neither PATH.py:FACTORY nor an architecture string: {e}"
            ) from None
        _same_shape(arch.input_shape, shape)
        return _Lowered(tuple(arch.lower(batch)), 0)

    def _trace(self, text: str, shape: tuple[int, int, int], batch: int) -> tuple[LayerSpec, ...]:
        from costmodel import ModuleNetwork  # lazy: imports torch

        try:
            return ModuleNetwork(text, shape, self.csv_dir).lower(batch)
        except ValueError as e:  # names the model and what went wrong with it
            raise RowError(str(e)) from None


def _same_shape(own: Sequence[int], shape: tuple[int, int, int]) -> None:
    if tuple(own) != shape:
        want = "x".join(str(v) for v in own)
        raise RowError(f"input_shape={'x'.join(map(str, shape))} differs from the network's {want}")


def read_rows(
    path: Path, base: HardwareProfile, resolver: ModelResolver
) -> tuple[list[MeasuredNetwork], list[tuple[int, str]]]:
    """(measured networks, [(line, reason)] of refused rows) from a measurements CSV."""
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ProfileError(f"{path}: missing column(s) {missing}; need {list(COLUMNS)}")
        good: list[MeasuredNetwork] = []
        refused: list[tuple[int, str]] = []
        for row in reader:
            line = reader.line_num
            try:
                good.append(_measured(row, base, resolver, good))
            except RowError as e:
                refused.append((line, str(e)))
    return good, refused


def _measured(
    row: dict[str, str],
    base: HardwareProfile,
    resolver: ModelResolver,
    good: Sequence[MeasuredNetwork],
) -> MeasuredNetwork:
    precision = (row["precision"] or "").strip()
    runtime = (row["runtime"] or "").strip()
    if precision not in PRECISIONS:
        raise RowError(f"precision={precision!r} is not one of {list(PRECISIONS)}")
    if precision not in base.peak_ops_per_s:
        raise RowError(f"precision={precision!r}: the base profile has no peak for it")
    if runtime not in RUNTIMES:
        raise RowError(f"runtime={runtime!r} is not one of {list(RUNTIMES)}")
    if good and (precision, runtime) != (good[0].precision, good[0].runtime):
        raise RowError(
            f"precision={precision!r}, runtime={runtime!r} differ from the first usable row's "
            f"{good[0].precision!r}, {good[0].runtime!r} (fit one at a time)"
        )
    shape = parse_shape(row["input_shape"] or "")
    batch = _positive_int(row["batch"] or "", "batch")
    latency_s = _latency(row["latency_s"] or "")
    if not (row["model"] or "").strip():
        raise RowError("model is empty")
    lowered = resolver.lower(row["model"], shape, batch)
    from costmodel._fit import MeasuredNetwork

    return MeasuredNetwork(lowered.specs, latency_s, precision, runtime, lowered.extra_kernels)


def _fit_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m hw_profiles fit",
        description="Fit a profile's host costs, device cost per kernel and efficiencies to "
        "measured whole-network latencies, with a base profile as the prior.",
    )
    p.add_argument("--base", required=True, help="built-in profile name or TOML path (the prior)")
    p.add_argument("--measurements", required=True, help=f"CSV with columns {','.join(COLUMNS)}")
    p.add_argument("--out", required=True, help="TOML file to write")
    p.add_argument("--name", default=None, help="profile name (default <base>-fitted)")
    p.add_argument(
        "--prior-weight",
        type=float,
        default=0.05,
        help="pull of each parameter toward the base profile, per unit of log (default 0.05)",
    )
    return p


def _fit_table(
    base_name: str,
    path: Path,
    data: bytes,
    n: int,
    refused: int,
    fit: NetworkFit,
    rows: Sequence[MeasuredNetwork],
) -> dict[str, Any]:
    return {
        "base": base_name,
        "measurements": path.name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "rows": n,
        "refused_rows": refused,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "precision": rows[0].precision,
        "runtime": rows[0].runtime,
        "parameters": dict(fit.parameters),
        "prior": dict(fit.prior),
        "fit_mdape": fit.fit_mdape,
        "fit_spearman": fit.fit_spearman,
        "cv_mdape": fit.cv_mdape,
        "cv_spearman": fit.cv_spearman,
        "cv_folds": fit.cv_folds,
    }


def fit_main(argv: Sequence[str]) -> int:
    """``python -m hw_profiles fit``: read, fit, report and write; 2 on unusable input."""
    args = _fit_parser().parse_args(list(argv))
    out, path = Path(args.out), Path(args.measurements)
    if out.suffix != ".toml":
        print(f"fit: --out={args.out!r} must end in .toml", file=sys.stderr)
        return 2
    if not path.is_file():
        print(f"fit: --measurements={args.measurements!r} not found", file=sys.stderr)
        return 2
    try:
        base = load(args.base)
        rows, refused = read_rows(path, base, ModelResolver(path.parent))
    except ProfileError as e:
        print(f"fit: {e}", file=sys.stderr)
        return 2
    for line, reason in refused:
        print(f"fit: {path.name}:{line}: refused: {reason}", file=sys.stderr)
    if len(rows) < MIN_ROWS:
        print(f"fit: {len(rows)} usable row(s), need at least {MIN_ROWS}", file=sys.stderr)
        return 2
    from costmodel._fit import fit_networks  # lazy: numpy, scipy, torch

    fit = fit_networks(base, rows, prior_weight=args.prior_weight)
    name = args.name or f"{base.name}-fitted"
    hw = dataclasses.replace(
        fit.profile,
        name=name,
        source=f"{base.name} ({base.source}) with eager host/device costs and efficiencies "
        f"fitted to {len(rows)} measured networks in {path.name} by `python -m hw_profiles fit`",
    )
    header = (
        "Written by `python -m hw_profiles fit` (costmodel/_fit.py: fit_networks).\n"
        "Ceilings from the base profile; [fit] records the measurements and errors."
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    table = _fit_table(base.name, path, path.read_bytes(), len(rows), len(refused), fit, rows)
    out.write_text(profile_to_toml(hw, table, header, table="fit"))
    load_fresh(out)  # the file must load with the schema it was written for
    print(f"fitted {len(rows)} rows ({len(refused)} refused) on base {base.name}:")
    for k, v in fit.parameters.items():
        unit = f"{v * 1e6:.2f} us" if k.endswith("_s") else f"{v:.3f}"
        print(f"  {k:22s} {unit}  (prior {fit.prior[k] * (1e6 if k.endswith('_s') else 1):.3g})")
        if k == "host_conv_extra_s" and fit.host_extra_classes:
            print(f"  {'':22s} moves {', '.join(fit.host_extra_classes)} (their base ratios kept)")
    print(f"fit:  MdAPE {fit.fit_mdape:.1%}  Spearman {fit.fit_spearman:.3f}")
    print(
        f"{fit.cv_folds}-fold cross-validation (leave-one-out when folds = rows): "
        f"MdAPE {fit.cv_mdape:.1%}  Spearman {fit.cv_spearman:.3f}"
    )
    print(f"wrote {out}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hw_profiles",
        description="Hardware profiles for the roofnas cost model: datasheet peaks per "
        "precision, memory bandwidth and size, per-kernel overheads, efficiencies.",
        epilog="Units: TFLOPS/TOPS = 1e12 ops/s, GB/s = 1e9 bytes/s, GiB = 2^30 bytes; "
        "ridge point = peak ops/s / bandwidth bytes/s. Exit codes: 0 ok, 2 usage error "
        "(unknown profile, invalid file), 1 failure.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p_list = sub.add_parser(
        "list",
        help="table of the built-in profiles",
        description="One line per built-in profile: device type, fp32/fp16 "
        "peaks (TFLOPS), int8 peak (TOPS), bandwidth (GB/s), memory (GiB) "
        "and ridge points (FLOP/byte).",
    )
    p_list.add_argument("--json", action="store_true", help="machine-readable output (SI units)")
    p_show = sub.add_parser(
        "show",
        help="every field of one profile",
        description="All fields of a profile: source, notes, peaks and "
        "ridge point per precision, runtime overheads, efficiencies.",
    )
    p_show.add_argument(
        "profile",
        metavar="NAME_OR_PATH",
        help=f"a built-in name ({', '.join(available())}) or a path to a .toml file",
    )
    p_show.add_argument("--json", action="store_true", help="machine-readable output (SI units)")
    sub.add_parser(
        "calibrate",
        add_help=False,
        help="measure this machine and write a profile (`calibrate --help` for its options)",
    )
    sub.add_parser(
        "fit",
        add_help=False,
        help="fit a profile to a CSV of measured networks (`fit --help` for its options)",
    )
    sub.add_parser(
        "rescale",
        add_help=False,
        help="bring a calibrated profile to the machine's speed now by timing "
        "a dozen calibration networks again (`rescale --help` for its options)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # calibrate owns its own arguments (calibrate_main parses them).
    if argv and argv[0] == "calibrate":
        return calibrate_main(argv[1:])
    if argv and argv[0] == "fit":
        return fit_main(argv[1:])
    if argv and argv[0] == "rescale":
        from hw_profiles._cli_rescale import rescale_main

        return rescale_main(argv[1:])
    args = _parser().parse_args(argv)
    try:
        return _cmd_list(args) if args.command == "list" else _cmd_show(args)
    except _UsageError as e:
        print(f"hw_profiles: error: {e}", file=sys.stderr)
        return 2
