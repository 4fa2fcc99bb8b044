"""Two factors or four: the same probe timings, both fits, against the networks timed next.

``hw_profiles rescale --raw`` keeps every probe it timed (12 calibration networks, the
reference network at three batches and, by default, 25 op chains at batches 1 and 32). From
one such file this script fits both methods, as rescale itself would:

- two factors (``--no-chains``): fixed costs and throughput, every kernel alike, fitted to
  the networks alone;
- four factors (the default): the same two for convs and linear layers and two more for
  BatchNorms, activations, adds and pools (``costmodel._rescale.STREAMING_CLASSES``),
  fitted to the networks and the op chains;

and compares the base profile, unscaled and scaled both ways, with the validation timings
(``costmodel validate``) saved in the same session folder. Nothing is timed.

    python experiments/rescale_chains_check.py \
        --profile op_chains=experiments/results/epyc_op_chains/calibrated_cpu.toml \
        --session s6=experiments/results/epyc_rescale/session6 \
        --out experiments/results/epyc_rescale/chains_check.md
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import numpy as np
from profile_cross_check import (  # the script beside this one; it puts the checkout on sys.path
    SETS,
    measured_times,
    parse_arguments,
    predict,
)
from scipy.stats import spearmanr

from costmodel._calibrate import spec_from_dict
from costmodel._cli import read_networks
from costmodel._rescale import fit_speed_change
from hw_profiles import HardwareProfile, load_fresh


def _fits(hw: HardwareProfile, folder: Path) -> dict[str, HardwareProfile]:
    probes = json.loads((folder / "probes.json").read_text())["probes"]
    rows = [([spec_from_dict(d) for d in p["layers"]], p["time_s"]) for p in probes]
    networks = [r for r, p in zip(rows, probes, strict=True)
                if not p["probe"].startswith("chain:")]  # fmt: skip
    two = fit_speed_change(hw, networks)
    four = fit_speed_change(hw, rows, streaming=True)
    return {
        "unscaled": hw,
        f"two factors (x{two.overhead_factor:.2f} fixed, x{two.throughput_factor:.2f} "
        "throughput)": two.scale(hw),
        f"four factors (convs x{four.overhead_factor:.2f} / x{four.throughput_factor:.2f}, "
        f"streaming x{four.streaming_overhead_factor:.2f} / "
        f"x{four.streaming_throughput_factor:.2f})": four.scale(hw),
    }


def _rows(label: str, folder: Path, profiles: dict[str, HardwareProfile]) -> list[str]:
    out = []
    for name, networks_file in SETS:
        nets = read_networks(networks_file)
        for b in (1, 32):
            measured = measured_times(folder, name, b)
            if measured is None:
                continue
            m = np.array([measured[str(n)] for n in nets])
            cells = []
            for hw in profiles.values():
                pred = predict(nets, b, hw)
                rho = spearmanr(pred, m).statistic
                cells.append(f"{rho:.3f} / {np.median(np.abs(pred / m - 1)):.1%}")
            out.append(f"| {label} | {name} | {b} | " + " | ".join(cells) + " |")
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(__doc__, argv)
    missing = [str(f) for _, f in args.session if not (f / "probes.json").is_file()]
    if missing:
        raise SystemExit(f"--session: no probes.json (rescale --raw) in {missing}")
    command = " ".join(["python experiments/rescale_chains_check.py", *(argv or sys.argv[1:])])
    lines = ["# Rescale: two factors or four, from the same probe timings", "",
             f"Command: `{command}` (nothing timed).", "",
             "Each cell: Spearman / median absolute error against the wall-clock median of "
             "`costmodel validate`, run right after the probes.", ""]  # fmt: skip
    for (plabel, path), (label, folder) in itertools.product(args.profile, args.session):
        profiles = _fits(load_fresh(path), folder)
        lines += [f"Profile {plabel} (`{path}`), session {label} (`{folder}`):", "",
                  "| session | set | batch | " + " | ".join(profiles) + " |",
                  "|---|---|---|" + "---|" * len(profiles),
                  *_rows(label, folder, profiles), ""]  # fmt: skip
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
