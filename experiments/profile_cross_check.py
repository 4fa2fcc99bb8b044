"""Several calibrated profiles against several validation sessions' measured times.

On a shared VM the machine's speed drifts by tens of percent over hours, so one profile
against one session's timings mixes the model's error with the machine's drift. Predicting
every session with every profile separates them: a profile's rank correlation does not move
with a uniform drift, its level error does.

    python experiments/profile_cross_check.py \
        --profile morning=experiments/results/epyc/calibrated_cpu.toml \
        --profile op_chains=experiments/results/epyc_op_chains/calibrated_cpu.toml \
        --session morning=experiments/results/epyc \
        --session afternoon=experiments/results/epyc_op_chains \
        --out experiments/results/epyc_op_chains/profile_cross_check.md

Nothing is timed: it reads ``validation_cpu_{set}_b{batch}.json`` files that ``costmodel
validate`` wrote, for the development list, the held-out list, the unseen families, the
CIFAR and torchvision classics and the single-operation diagnostic networks
(``pure_networks.txt``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from costmodel._cli import DEV_LIST_FILE, HELDOUT_FILE, read_networks  # noqa: E402
from costmodel._report import analyze  # noqa: E402
from costmodel._rescale import fit_speed_change, scale_profile  # noqa: E402
from hw_profiles import HardwareProfile, calibration_table, load_fresh  # noqa: E402
from searchspace import reference_architecture  # noqa: E402

Scale = Callable[[HardwareProfile, float, float], HardwareProfile]
SETS = (("devlist", DEV_LIST_FILE), ("heldout", HELDOUT_FILE),
        ("unseen_families", ROOT / "experiments" / "unseen_families.txt"),
        ("cifar_classics", ROOT / "experiments" / "cifar_classics.txt"),
        ("torchvision_classics", ROOT / "experiments" / "torchvision_classics.txt"),
        ("pure_networks", ROOT / "experiments" / "pure_networks.txt"))  # fmt: skip


def _pair(text: str) -> tuple[str, Path]:
    label, sep, path = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r} must be LABEL=PATH")
    return label, Path(path)


def parse_arguments(doc: str, argv: list[str] | None) -> argparse.Namespace:
    """--profile LABEL=TOML and --session LABEL=FOLDER (each repeated) and --out FILE."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--profile", type=_pair, action="append", required=True)
    p.add_argument("--session", type=_pair, action="append", required=True)
    p.add_argument("--out", type=Path, required=True)
    return p.parse_args(argv)


def rescaled_to_session(
    hw: HardwareProfile,
    then: dict[str, float],
    folder: Path,
    name: str,
    scale: Scale = scale_profile,
) -> HardwareProfile | None:
    """``hw`` at the speed of the session in ``folder`` while it measured set ``name``;
    ``scale``: how the two fitted factors change a profile."""
    now = {}
    for b in (1, 32):
        doc = validation_doc(folder, name, b)
        if doc is not None and f"b{b}" in then:
            now[b] = doc["meta"]["reference_s"]
    if not now:
        return None
    # The reference alone as the speed probe: its predicted time moved by its measured ratio.
    ref = reference_architecture()
    rows = []
    for b, t in now.items():
        specs = list(ref.lower(b))
        rows.append((specs, analyze(specs, hw, "fp32", "eager").total.latency_s
                     * t / then[f"b{b}"]))  # fmt: skip
    change = fit_speed_change(hw, rows, scale=scale)
    return scale(hw, change.overhead_factor, change.throughput_factor)


def predict(nets: list, b: int, hw: HardwareProfile) -> np.ndarray:
    return np.array([analyze(list(n.lower(b)), hw, "fp32", "eager").total.latency_s
                     for n in nets])  # fmt: skip


def validation_doc(folder: Path, name: str, b: int) -> dict | None:
    """What ``costmodel validate`` wrote in ``folder`` for set ``name`` at batch ``b``."""
    f = folder / f"validation_cpu_{name}_b{b}.json"
    return json.loads(f.read_text()) if f.exists() else None


def _times(doc: dict) -> dict[str, float]:
    return {pt["arch"]: pt["measured_s"] for pt in doc["points"]}


def measured_times(folder: Path, name: str, b: int) -> dict[str, float] | None:
    doc = validation_doc(folder, name, b)
    return None if doc is None else _times(doc)


def _session_agreement(sessions: list[tuple[str, Path]]) -> list[str]:
    """Spearman of one session's measured times against another's, per set and batch: how far
    a model's ranking can be trusted to hold from one session to the next."""
    lines = ["| set | batch | sessions | lowest pair | median pair | highest pair |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for name, _ in SETS:
        for b in (1, 32):
            got = [(label, m) for label, folder in sessions
                   if (m := measured_times(folder, name, b)) is not None]  # fmt: skip
            rhos = [spearmanr([x[k] for k in sorted(x)], [y[k] for k in sorted(x)]).statistic
                    for (_, x), (_, y) in itertools.combinations(got, 2)]  # fmt: skip
            if rhos:
                lines.append(f"| {name} | {b} | {len(got)} | {min(rhos):.3f} | "
                             f"{np.median(rhos):.3f} | {max(rhos):.3f} |")  # fmt: skip
    return lines


def reference_times(path: Path) -> dict[str, float]:
    """The reference network's times per batch when ``path`` was calibrated. A profile refitted
    from a session's recorded timings (``allocator_refit.py``) has none of its own: those
    timings are its session's, so the session's ``calibrated_cpu.toml`` holds them."""
    ref = calibration_table(str(path)).get("reference_s", {})
    session = path.with_name("calibrated_cpu.toml")
    if not ref and session != path and session.exists():
        ref = calibration_table(str(session)).get("reference_s", {})
    return ref


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(__doc__, argv)
    profiles = [(label, load_fresh(path)) for label, path in args.profile]
    # Each profile's reference-network times per batch when it was calibrated.
    refs = [reference_times(path) for _, path in args.profile]
    head = (
        "| set | batch | measured in | "
        + " | ".join(
            f"{label} rho | MdAPE | at its calibration speed | rescaled MdAPE (rho)"
            for label, _ in profiles
        )
        + " |"
    )
    lines = [head, "|" + "---|" * (3 + 4 * len(profiles))]
    for name, listing in SETS:
        # What each session measured of this set, read once (None: not measured).
        docs = {(label, b): validation_doc(folder, name, b)
                for label, folder in args.session for b in (1, 32)}  # fmt: skip
        if all(d is None for d in docs.values()):
            continue
        nets = read_networks(listing)
        # Each profile at each session's speed while it measured this set (None: not measured).
        moved = {(i, label): rescaled_to_session(hw, ref, folder, name)
                 for i, ((_, hw), ref) in enumerate(zip(profiles, refs, strict=True))
                 for label, folder in args.session}  # fmt: skip
        for b in (1, 32):
            if all(docs[label, b] is None for label, _ in args.session):
                continue  # no session measured it: predicting it would cost minutes for nothing
            preds = [predict(nets, b, hw) for _, hw in profiles]
            for label, _ in args.session:
                doc = docs[label, b]
                if doc is None:
                    continue
                measured = _times(doc)
                m = np.array([measured[str(n)] for n in nets])
                cells = [name, str(b), label]
                now = doc["meta"]["reference_s"]
                for i, (pred, ref) in enumerate(zip(preds, refs, strict=True)):
                    speed = ref.get(f"b{b}", now) / now  # the machine then over now
                    cells += [f"{spearmanr(pred, m).statistic:.3f}",
                              f"{np.median(np.abs(pred / m - 1)):.1%}",
                              f"{np.median(np.abs(pred / (m * speed) - 1)):.1%} "
                              f"(x{speed:.2f})"]  # fmt: skip
                    if moved[i, label] is None:
                        cells.append("-")
                        continue
                    rp = predict(nets, b, moved[i, label])
                    cells.append(f"{np.median(np.abs(rp / m - 1)):.1%} "
                                 f"({spearmanr(rp, m).statistic:.3f})")  # fmt: skip
                lines.append("| " + " | ".join(cells) + " |")
                print(lines[-1], flush=True)
    command = "python experiments/profile_cross_check.py " + " ".join(sys.argv[1:])
    text = ["# Profiles x validation sessions", "", f"Command: `{command}` (no timing).",
            "Profiles: " + ", ".join(f"{label} = `{path}`" for label, path in args.profile),
            "", "Sessions: " + ", ".join(f"{label} = `{path}`" for label, path in args.session),
            "", "'at its calibration speed': the session's times scaled by the reference "
            "network's time when that profile was calibrated over its time in the session "
            "(x factor; below 1: the machine ran slower in the session), i.e. the profile's "
            "error on the machine state it was fitted in. 'rescaled': the profile scaled by "
            "the two factors `hw_profiles rescale` fits (fixed costs, throughput), here fitted "
            "to how the reference network's batch-1 and batch-32 times moved between "
            "calibration and that session (the reference alone as the speed probe), against "
            "the raw times.", "", *lines, "",
            "## Measured against measured", "",
            "Spearman between two sessions' measured times of the same networks, every pair of "
            "sessions: how far the measured ranking itself moves from one session to another.",
            "", *_session_agreement(args.session)]  # fmt: skip
    args.out.write_text("\n".join(text) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
