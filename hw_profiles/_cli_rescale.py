"""``python -m hw_profiles rescale``: a calibrated profile brought to the machine's speed now.

Command-line glue, so it may reach up the layers: the probe networks (the first calibration
networks, at the batches calibration timed them) and the reference network come from
``searchspace``, the timing and the fit from ``costmodel._rescale`` (which imports torch;
imported only when the command runs).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import platform
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hw_profiles._schema import HardwareProfile, ProfileError, calibration_table, load_fresh
from hw_profiles._toml import profile_to_toml

if TYPE_CHECKING:  # annotations only: costmodel sits above hw_profiles
    from costmodel._rescale import SpeedChange

_DEVICES = {"cpu": "cpu", "gpu": "cuda", "soc": "cuda"}  # device_type -> where to time
# Below this median error on the timed probes, how the machine moved is not told apart from
# how differently its networks drift (measured on the development VM, see --min-error).
MIN_ERROR = 0.25
HEADER = (
    "Written by `python -m hw_profiles rescale` (costmodel/_rescale.py): a calibrated\n"
    "profile scaled to the machine's speed when [rescale] timed it again."
)
PROBES = 12  # calibration networks timed again: 5 at batch 1, 5 at batch 32, 2 at batch 8


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m hw_profiles rescale",
        description="Time a dozen of the calibration networks, the reference network and "
        "the op chains calibration timed again (about two minutes on a CPU), fit how the "
        "machine's fixed costs and throughput moved against the profile's predictions, for "
        "convs and linear layers and apart from them for BatchNorms, activations, adds and "
        "pools, and write the profile scaled by those factors. For a machine whose speed "
        "drifts (a shared VM, a laptop on battery): cheaper than calibrating again.",
        epilog="Exit codes: 0 ok, 2 usage error (bad path, bad space), 1 failure while measuring.",
    )
    p.add_argument(
        "--hw",
        required=True,
        help="a profile TOML written by `python -m hw_profiles calibrate` on this machine",
    )
    p.add_argument("--out", required=True, help="TOML file to write")
    p.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default=None,
        help="where to time (default: the device the profile was calibrated on)",
    )
    p.add_argument(
        "--space",
        default="cifar",
        help="search space of the probe networks, drawn with the calibration "
        "seed (default cifar, calibrate's default)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="interleaved timing rounds per batch (default: validation's, 100 "
        "up to batch 8 and 20 above)",
    )
    p.add_argument(
        "--min-error",
        type=float,
        default=MIN_ERROR,
        help="scale only when the profile is off by more than this on the timed "
        "networks and op chains (median absolute relative error; default "
        "%(default)s); below it the profile is written unscaled. Set on the "
        "development VM for the two-factor fit (--no-chains): with the profile off "
        "by 15-18 %% on the networks, scaling did not help other networks (median "
        "error 13.5 %% scaled, 9.8 %% unscaled); 0 always scales",
    )
    p.add_argument(
        "--no-chains",
        action="store_true",
        help="skip the op chains (about a minute on a CPU) and fit two factors "
        "for all kernels alike, not four (fixed costs and throughput, of convs and "
        "linear layers apart from BatchNorms, activations, adds and pools)",
    )
    p.add_argument(
        "--raw",
        default=None,
        help="also write every probe's layers and measured seconds to this JSON "
        "file (written before the fit, so a timing is never lost; "
        "costmodel._calibrate.spec_from_dict reads the layers back)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    return p


def _usage_error(args: argparse.Namespace) -> str | None:
    if Path(args.out).suffix != ".toml":
        return f"--out={args.out!r} must end in .toml"
    if args.raw is not None and Path(args.raw).suffix != ".json":
        return f"--raw={args.raw!r} must end in .json"
    if not Path(args.hw).is_file():
        return f"--hw={args.hw!r} is not a file (a profile written by calibrate)"
    if not 0 <= args.min_error < 1:
        return f"--min-error={args.min_error} must be in [0, 1)"
    if args.rounds is not None and args.rounds < 1:
        return f"--rounds={args.rounds} must be >= 1"
    try:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return f"--out={args.out!r}: cannot create its folder ({e.strerror or e})"
    return None


def _by_batch(times: Mapping[int, float]) -> dict[str, float]:
    return {f"b{b}": float(t) for b, t in sorted(times.items())}


class _UsageError(ValueError):
    """Bad input, reported with exit code 2; the message names the flag."""


def _inputs(args: argparse.Namespace) -> tuple[HardwareProfile, dict[str, Any], list[Any]]:
    """The profile, its [calibration] table and the probe networks; _UsageError naming the
    flag when one cannot be read."""
    import searchspace  # glue: the probe networks
    from costmodel._bench import CALIBRATION_SEED

    try:
        hw = load_fresh(args.hw)
        calibration = calibration_table(args.hw)
    except ProfileError as e:
        raise _UsageError(f"--hw: {e}") from None
    try:
        probes = searchspace.sample_architectures(args.space, PROBES, CALIBRATION_SEED)
    except searchspace.SpaceError as e:
        raise _UsageError(f"--space: {e}") from None
    return hw, calibration, list(probes)


def rescale_main(argv: Sequence[str]) -> int:
    """Time the probes, fit the speed change, write the (scaled) profile."""
    args = _parser().parse_args(list(argv))
    try:
        error = _usage_error(args)
        if error:
            raise _UsageError(error)
        hw, calibration, probes = _inputs(args)
    except _UsageError as e:
        print(f"rescale: {e}", file=sys.stderr)
        return 2
    import searchspace  # glue: the reference network
    from costmodel import _rescale as R  # lazy: it imports torch
    from costmodel._calibrate import CALIBRATION_SEED, NETWORK_BATCHES
    from costmodel._chains import CHAIN_BATCHES, op_chains

    reference = searchspace.reference_architecture()
    device = args.device or calibration.get("device") or _DEVICES[hw.device_type]
    log = (lambda s: print(s, file=sys.stderr)) if args.json else print
    chains = [] if args.no_chains else op_chains()
    log(
        f"timing {PROBES} calibration networks, the reference network"
        + (f" and {len(chains)} op chains at batches {list(CHAIN_BATCHES)}" if chains else "")
        + f" on {device} ..."
    )
    try:
        rows, names, reference_now = _time_probes(probes, chains, reference, device, hw, args)
    except RuntimeError as e:
        print(f"rescale: {e}", file=sys.stderr)
        return 1
    if args.raw:
        _write_raw(Path(args.raw), names, rows)
    change = R.fit_speed_change(hw, rows, streaming=bool(chains))
    applied = change.error_before > args.min_error
    scaled = change.scale(hw)
    probed = (f"{PROBES} from {args.space} (seed {CALIBRATION_SEED}) at batches "
              f"{list(NETWORK_BATCHES)} and the reference network at {sorted(reference_now)}"
              + (f"; {len(chains)} op chains (costmodel._chains) at batches "
                 f"{list(CHAIN_BATCHES)}" if chains else ""))  # fmt: skip
    table = {**_rescale_table(args.hw, device, probed, change, calibration, reference_now),
             "applied": applied}  # fmt: skip
    if applied and calibration.get("reference_arch") == str(reference):
        calibration["reference_s"] = _by_batch(reference_now)  # validate compares with now
    out = Path(args.out)
    out.write_text(profile_to_toml(scaled if applied else hw, calibration, HEADER,
                                   more_tables={"rescale": table}))  # fmt: skip
    load_fresh(out)  # the file must load with the schema it was written for
    if args.json:
        print(json.dumps({"out": str(out), "rescale": table}))
    else:
        timed = len(rows) - len(chains) * len(CHAIN_BATCHES)
        _print_summary(change, f"{timed} networks"
                       + (f" and {len(rows) - timed} op chains" if chains else ""),
                       out, applied, args.min_error)  # fmt: skip
    return 0


def _time_probes(
    probes: Sequence[Any],
    chains: Sequence[Any],
    reference: Any,
    device: str,
    hw: HardwareProfile,
    args: argparse.Namespace,
) -> tuple[list[tuple[Any, float]], list[str], dict[int, float]]:
    """(layers, seconds) of every probe, its name, and the reference's seconds per batch:
    the networks at calibration's batches, the chains at theirs, then the reference."""
    from costmodel import _rescale as R
    from costmodel._calibrate import NETWORK_BATCHES
    from costmodel._chains import CHAIN_BATCHES

    rows, reference_now = R.measure_probes(
        probes,
        NETWORK_BATCHES,
        device,
        reference=reference,
        threads=hw.threads,
        rounds=args.rounds,
    )
    at = [NETWORK_BATCHES[i % len(NETWORK_BATCHES)] for i in range(len(probes))]
    names = [f"{n} b{b}" for b in sorted(set(at))  # measure_probes groups by batch
             for n, nb in zip(probes, at, strict=True) if nb == b]  # fmt: skip
    for b in CHAIN_BATCHES if chains else ():
        rows += R.measure_probes(chains, (b,), device, threads=hw.threads,
                                 rounds=args.rounds)[0]  # fmt: skip
        names += [f"{c} b{b}" for c in chains]
    rows += [(tuple(reference.lower(b)), t) for b, t in sorted(reference_now.items())]
    names += [f"reference b{b}" for b in sorted(reference_now)]
    return rows, names, reference_now


def _write_raw(path: Path, names: Sequence[str], rows: Sequence[tuple[Any, float]]) -> None:
    from costmodel._calibrate import spec_to_dict  # glue: the layers' JSON form

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"probes": [
        {"probe": name, "time_s": t, "layers": [spec_to_dict(sp) for sp in specs]}
        for name, (specs, t) in zip(names, rows, strict=True)]}, indent=0))  # fmt: skip


def _rescale_table(
    path: str,
    device: str,
    probed: str,
    change: SpeedChange,
    calibration: Mapping[str, Any],
    reference_now: Mapping[int, float],
) -> dict[str, Any]:
    table: dict[str, Any] = {
        "base": str(path),
        "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "device": device,
        "host": platform.node() or "unknown-host",
        "networks": probed,
        "overhead_factor": round(change.overhead_factor, 4),
        "throughput_factor": round(change.throughput_factor, 4),
        **(
            {
                "streaming_overhead_factor": round(change.streaming_overhead_factor, 4),
                "streaming_throughput_factor": round(change.streaming_throughput_factor, 4),
            }
            if change.streaming_overhead_factor is not None
            and change.streaming_throughput_factor is not None
            else {}
        ),
        "median_abs_error_before": round(change.error_before, 4),
        "median_abs_error_after": round(change.error_after, 4),
    }
    if calibration.get("reference_s"):
        table["reference_then_s"] = dict(calibration["reference_s"])
    table["reference_now_s"] = _by_batch(reference_now)
    return table


def _print_summary(
    change: SpeedChange, timed: str, out: Path, applied: bool, min_error: float
) -> None:
    print(f"{timed} timed: the profile was off by {change.error_before:.1%} (median), "
          f"scaled by {change.error_after:.1%}")  # fmt: skip
    kinds = "" if change.streaming_overhead_factor is None else "convs and linear: "
    print(f"{kinds}fixed costs x{change.overhead_factor:.3f}, seconds per op and byte "
          f"x{change.throughput_factor:.3f} (above 1: slower now)")  # fmt: skip
    if change.streaming_overhead_factor is not None:
        print(f"BatchNorms, activations, adds and pools: fixed costs "
              f"x{change.streaming_overhead_factor:.3f}, seconds per op and byte "
              f"x{change.streaming_throughput_factor:.3f}")  # fmt: skip
    if applied:
        print(f"wrote {out}")
    else:
        print(
            f"wrote {out} unscaled: {change.error_before:.1%} is within --min-error="
            f"{min_error}, which the drift of a shared machine's networks exceeds"
        )
