"""Which split of the machine's speed change explains the drift: development list only.

``hw_profiles rescale`` scales a profile by two factors. Which two was decided here, on the
development list's timings of three sessions, predicted by three calibrated profiles, each
rescaled to the session by the reference network's batch-1 and batch-32 times in it:

- fixed costs / throughput (``costmodel._rescale.scale_profile``, what rescale does);
- one factor for everything;
- everything but DRAM / DRAM bandwidth and fresh pages (neighbours contending for memory);
- no profile at all: each batch's times scaled by the reference's own ratio at that batch
  (validate's "at calibration speed", not a profile one could save).

    python experiments/rescale_split_ablation.py \
        --profile morning=experiments/results/epyc/calibrated_cpu.toml \
        --profile cold_start=experiments/results/epyc_op_chains/cold_start_session/\
calibrated_cpu.toml \
        --profile op_chains=experiments/results/epyc_op_chains/calibrated_cpu.toml \
        --session morning=experiments/results/epyc \
        --session afternoon1=experiments/results/epyc_op_chains/cold_start_session \
        --session afternoon2=experiments/results/epyc_op_chains \
        --out experiments/results/epyc_rescale/split_ablation.md

Nothing is timed.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
from profile_cross_check import (  # the script beside this one; it puts the checkout on sys.path
    ROOT,
    Scale,
    measured_times,
    parse_arguments,
    predict,
    rescaled_to_session,
    validation_doc,
)

sys.path.insert(0, str(ROOT))

from costmodel._cli import DEV_LIST_FILE, read_networks
from costmodel._rescale import scale_profile
from hw_profiles import HardwareProfile, calibration_table, load_fresh


def _one_factor(hw: HardwareProfile, a: float, _c: float) -> HardwareProfile:
    return scale_profile(hw, a, a)


def _dram_apart(hw: HardwareProfile, a: float, c: float) -> HardwareProfile:
    """Fixed costs, compute and cache traffic times ``a``; DRAM traffic and fresh pages ``c``."""
    return dataclasses.replace(
        scale_profile(hw, a, a),
        bandwidth_bytes_per_s=hw.bandwidth_bytes_per_s / c,
        page_fault_s_per_byte=hw.page_fault_s_per_byte * c,
    )


SPLITS: dict[str, Scale] = {
    "fixed costs / throughput": scale_profile,
    "one factor": _one_factor,
    "all but DRAM / DRAM": _dram_apart,
}


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(__doc__, argv)
    nets = read_networks(DEV_LIST_FILE)
    columns = [*SPLITS, "per batch, no profile"]
    lines = ["| profile | session | batch | " + " | ".join(columns) + " |",
             "|---|---|---|" + "---|" * len(columns)]  # fmt: skip
    errors: list[list[float]] = []
    for plabel, path in args.profile:
        hw, then = load_fresh(path), calibration_table(str(path))["reference_s"]
        moved = {split: {s: rescaled_to_session(hw, then, folder, "devlist", scale)
                         for s, folder in args.session}
                 for split, scale in SPLITS.items()}  # fmt: skip
        for slabel, folder in args.session:
            for b in (1, 32):
                times = measured_times(folder, "devlist", b)
                if times is None:
                    continue
                m = np.array([times[str(n)] for n in nets])
                row = [float(np.median(np.abs(predict(nets, b, moved[split][slabel]) / m - 1)))
                       for split in SPLITS]  # fmt: skip
                # The reference's ratio at this batch, applied to this batch's predictions.
                speed = then[f"b{b}"] / _reference_now(folder, b)
                row.append(float(np.median(np.abs(predict(nets, b, hw) / (m * speed) - 1))))
                errors.append(row)
                lines.append(f"| {plabel} | {slabel} | {b} | "
                             + " | ".join(f"{e:.1%}" for e in row) + " |")  # fmt: skip
                print(lines[-1], flush=True)
    means = np.mean(errors, axis=0)
    lines.append("| mean | | | " + " | ".join(f"{e:.1%}" for e in means) + " |")
    command = "python experiments/rescale_split_ablation.py " + " ".join(sys.argv[1:])
    text = ["# Rescale: which two factors (development list)", "",
            f"Command: `{command}` (no timing).", "",
            "Median absolute error of the development list's measured times (wall clock) "
            "predicted by each profile rescaled to the session with the reference network "
            "alone, fitted to how its batch-1 and batch-32 times moved since calibration.",
            "", *lines]  # fmt: skip
    args.out.write_text("\n".join(text) + "\n")
    return 0


def _reference_now(folder: Path, b: int) -> float:
    doc = validation_doc(folder, "devlist", b)
    assert doc is not None  # called only where measured_times found the file
    return float(doc["meta"]["reference_s"])


if __name__ == "__main__":
    raise SystemExit(main())
