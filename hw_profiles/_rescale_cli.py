"""``python -m hw_profiles rescale``: a calibrated profile brought to the machine's speed now.

Command-line glue, so it may reach up the layers: the reference network and the filler
networks come from ``searchspace``, the timing and the fit from ``costmodel._rescale``
(which imports torch; imported only when the command runs).
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

from hw_profiles._schema import ProfileError, _read_toml, load_fresh
from hw_profiles._toml import profile_to_toml

if TYPE_CHECKING:  # annotations only: costmodel sits above hw_profiles
    from costmodel._rescale import SpeedChange

FILLERS = 3  # calibration networks timed beside the reference, as calibration timed it


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m hw_profiles rescale",
        description="Time the reference network that calibration timed (about half a "
        "minute), fit how the machine's fixed costs and throughput moved since, and write "
        "the profile scaled by both. For a machine whose speed drifts (a shared VM, a laptop "
        "on battery): cheaper than calibrating again.",
        epilog="Exit codes: 0 ok, 2 usage error (profile without reference timings, bad "
        "path), 1 failure while measuring.",
    )
    p.add_argument("--hw", required=True,
                   help="a profile written by `python -m hw_profiles calibrate` (its "
                   "[calibration] table records the reference network's times)")
    p.add_argument("--out", required=True, help="TOML file to write")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="where to time (default: the device the profile was calibrated on)")
    p.add_argument("--space", default="cifar",
                   help="search space of the filler networks, drawn with the calibration "
                   "seed (default cifar, calibrate's default)")
    p.add_argument("--rounds", type=int, default=None,
                   help="interleaved timing rounds per batch (default: validation's, 100 "
                   "up to batch 8 and 20 above)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    return p


def _reference_then(path: str, table: Mapping[str, Any], reference_arch: str) -> dict[int, float]:
    """The reference times the profile records per batch; ValueError naming --hw if none."""
    if table.get("reference_arch") != reference_arch or not table.get("reference_s"):
        raise ValueError(
            f"--hw={path!r}: its [calibration] table records no times of the reference network "
            "(reference_arch, reference_s); write it with `python -m hw_profiles calibrate`"
        )
    return {int(k.lstrip("b")): float(v) for k, v in table["reference_s"].items()}


def _usage_error(args: argparse.Namespace) -> str | None:
    if Path(args.out).suffix != ".toml":
        return f"--out={args.out!r} must end in .toml"
    if not Path(args.hw).is_file():
        return f"--hw={args.hw!r} is not a file (a profile written by calibrate)"
    if args.rounds is not None and args.rounds < 1:
        return f"--rounds={args.rounds} must be >= 1"
    try:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return f"--out={args.out!r}: cannot create its folder ({e.strerror or e})"
    return None


def _by_batch(times: Mapping[int, float]) -> dict[str, float]:
    return {f"b{b}": float(t) for b, t in sorted(times.items())}


def rescale_main(argv: Sequence[str]) -> int:
    """Measure the reference, fit the speed change, write the scaled profile."""
    args = _parser().parse_args(list(argv))
    error = _usage_error(args)
    if error:
        print(f"rescale: {error}", file=sys.stderr)
        return 2
    import searchspace  # glue: the reference and filler networks
    from costmodel import _rescale as R  # lazy: it imports torch
    from costmodel._bench import CALIBRATION_SEED

    reference = searchspace.reference_architecture()
    try:
        hw = load_fresh(args.hw)
        data = _read_toml(Path(args.hw))
        calibration = dict(data.get("calibration", {}))
        then = _reference_then(args.hw, calibration, str(reference))
        fillers = searchspace.sample_architectures(args.space, FILLERS, CALIBRATION_SEED)
    except (ProfileError, ValueError, searchspace.SpaceError) as e:
        print(f"rescale: {e}", file=sys.stderr)
        return 2
    device = args.device or calibration.get("device", "cpu")
    log = (lambda s: print(s, file=sys.stderr)) if args.json else print
    log(f"timing the reference network at batches {sorted(then)} on {device} ...")
    try:
        now = R.measure_reference(reference, sorted(then), device, fillers=fillers,
                                  threads=hw.threads, rounds=args.rounds)  # fmt: skip
    except RuntimeError as e:
        print(f"rescale: {e}", file=sys.stderr)
        return 1
    layers = {b: list(reference.lower(b)) for b in then}
    change = R.fit_speed_change(hw, layers, then, now)
    scaled = R.scale_profile(hw, change.overhead_factor, change.throughput_factor)
    table = _rescale_table(args.hw, device, str(reference), change)
    calibration["reference_s"] = _by_batch(now)  # validate compares with the speed now
    header = ("Written by `python -m hw_profiles rescale` (costmodel/_rescale.py): a calibrated\n"
              "profile scaled to the machine's speed when [rescale] timed the reference network.")
    out = Path(args.out)
    out.write_text(profile_to_toml(scaled, calibration, header, more_tables={"rescale": table}))
    load_fresh(out)  # the file must load with the schema it was written for
    if args.json:
        print(json.dumps({"out": str(out), "rescale": table}))
    else:
        _print_summary(change, out)
    return 0


def _rescale_table(
    path: str, device: str, reference_arch: str, change: SpeedChange
) -> dict[str, Any]:
    return {
        "base": str(path),
        "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "device": device,
        "host": platform.node() or "unknown-host",
        "reference_arch": reference_arch,
        "reference_then_s": _by_batch(change.reference_then_s),
        "reference_now_s": _by_batch(change.reference_now_s),
        "overhead_factor": round(change.overhead_factor, 4),
        "throughput_factor": round(change.throughput_factor, 4),
        "fitted_ratio": {k: round(v, 4) for k, v in _by_batch(change.fitted_ratio).items()},
    }


def _print_summary(change: SpeedChange, out: Path) -> None:
    for b in sorted(change.reference_now_s):
        print(f"  batch {b:3d}: reference {change.reference_now_s[b] * 1e3:9.3f} ms now, "
              f"{change.reference_then_s[b] * 1e3:9.3f} ms then (x{change.measured_ratio(b):.3f}; "
              f"the two factors give x{change.fitted_ratio[b]:.3f})")  # fmt: skip
    print(f"fixed costs x{change.overhead_factor:.3f}, seconds per op and byte "
          f"x{change.throughput_factor:.3f} (above 1: slower now)")  # fmt: skip
    print(f"wrote {out}")
