"""Depthwise efficiencies carried across GPU generations: does a fitted value beat the
published one on a GPU whose generation no fit saw?

HELP timed once-for-all subnets on three GPU generations: Pascal (Titan Xp), Volta
(V100) and Turing (RTX 2080 Ti, Titan RTX). ``experiments/help_fit.py`` fits the fp32
depthwise conv efficiencies (compute, memory) on each. Most built-in GPUs (T4, A100,
H100, ...) have no such rows, so they need a rule. This script scores candidate rules
by leaving one generation out: each OFA GPU's networks are predicted with its shipped
profile, the depthwise values swapped for

- ``own``: its own fitted values (the ceiling);
- ``published``: 0.18 / 0.18, the Hopper figures every GPU had before any fit;
- ``from <generation>``: the median of another generation's fitted values;
- ``others' median``: the median over the other generations' values;
- ``Volta lineage``: the median over the Volta and Turing generations' values (the
  card itself left out), what a GPU of a later generation would get; ``compute
  only``: the same compute efficiency with the published memory efficiency.

Nothing else in the profile changes. ``--half dev`` scores development-half networks
(even ``arch_idx``, none that the OFA fit saw), the half rules are chosen on;
``--half heldout`` scores the odd half, which no fit and no choice has seen.

    python experiments/depthwise_transfer.py --half dev       # the decision (recorded)
    python experiments/depthwise_transfer.py --half heldout   # the report (recorded)
    python experiments/depthwise_transfer.py --half dev --sample 30 --out /tmp/dt
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import help_fit as H
from _provenance import provenance_finish, provenance_start, write_record
from ofa_depthwise_dev import dev_networks

import hw_profiles
from hw_profiles import HardwareProfile
from searchspace import OFANet

DEFAULT_OUT = H._ROOT / "experiments" / "results" / "depthwise_transfer"
BATCHES = (1, 32, 64)
PUBLISHED = (H.DATASHEET_CONV_LINEAR["depthwise_conv"],) * 2


def variants(name: str, profiles: dict[str, HardwareProfile]) -> dict[str, tuple[float, float]]:
    """The depthwise (compute, memory) values each rule gives GPU ``name``."""
    own_gen = H.GENERATION[name]
    gens = H.generation_depthwise({n: hw for n, hw in profiles.items() if n != name})
    others = {g: v for g, v in gens.items() if g != own_gen}
    out = {"own": profiles[name].efficiency("depthwise_conv", "fp32"), "published": PUBLISHED}
    if own_gen in gens:  # another card of the same generation
        out["same generation"] = gens[own_gen]
    out |= {f"from {g}": v for g, v in others.items()}
    out["others' median"] = _median(list(others.values()))
    lineage = _median([v for g, v in gens.items() if g in H.VOLTA_LINEAGE])
    out["Volta lineage"] = lineage
    out["Volta lineage, compute only"] = (lineage[0], PUBLISHED[1])
    return out


def _median(values: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(v[0] for v in values), statistics.median(v[1] for v in values)


def networks(ofa: list[H.Net], half: str, sample: int, seed: int) -> list[H.Net]:
    if half == "dev":
        return dev_networks(ofa, sample, seed)
    held = [n for n in ofa if not H.is_dev(n)]
    return random.Random(seed).sample(held, min(sample, len(held)))


def run(args: argparse.Namespace) -> dict[str, Any]:
    ofa = H.read(Path(args.data) / "help_ofa_latency.csv", OFANet.from_help_row)
    nets = networks(ofa, args.half, args.sample, args.seed)
    profiles = {name: hw_profiles.load(name) for name in H.OFA_GPUS.values()}
    cells = []
    for gpu, name in H.OFA_GPUS.items():
        rules = variants(name, profiles)
        for b in BATCHES:
            rows = [H.measured_network(n, gpu, b) for n in nets]
            meas = [r.latency_s for r in rows]
            scores = {rule: H.agreement(H.predict_networks(H.with_depthwise(profiles[name], v),
                                                           rows), meas)
                      for rule, v in rules.items()}  # fmt: skip
            cells.append(
                {
                    "gpu": gpu,
                    "profile": name,
                    "generation": H.GENERATION[name],
                    "batch": b,
                    "n": len(rows),
                    "values": rules,
                    "scores": scores,
                }
            )
            print(
                f"{gpu} b{b}: "
                + ", ".join(f"{k} {s['spearman']:.3f}/{s['mdape']:.1%}" for k, s in scores.items()),
                flush=True,
            )
    return {"half": args.half, "sample": len(nets), "seed": args.seed, "cells": cells}


def to_markdown(res: dict[str, Any], header: list[str]) -> str:
    half = (
        "development half (even `arch_idx`, none of the OFA fit's networks)"
        if res["half"] == "dev"
        else "held-out half (odd `arch_idx`)"
    )
    lines = [
        "# Depthwise efficiencies carried across GPU generations",
        "",
        *header,
        "",
        f"{res['sample']} OFA networks of the {half}, seed {res['seed']}. Each GPU's "
        "shipped profile with only its fp32 depthwise conv efficiencies (compute / "
        "memory) swapped. 'same generation': the other card of its generation, the "
        "T4's rule (Turing). 'Volta lineage': the median over the Volta and Turing "
        "generations' values, the card itself left out, the rule of the built-in GPUs "
        "of later generations (help_fit.TRANSFER_GPUS); 'compute only': that compute "
        "efficiency with the published memory one, Hopper's rule. 'others' median': "
        "over all other generations, Pascal included. Cells: Spearman / MdAPE.",
        "",
    ]
    for c in res["cells"]:
        if c["batch"] != BATCHES[0]:
            continue
        vals = ", ".join(f"{k} {v[0]:.3f} / {v[1]:.3f}" for k, v in c["values"].items())
        lines.append(f"- {c['gpu']} ({c['generation']}): {vals}")
    for gen_cells in _by_gpu(res["cells"]):
        rules = list(gen_cells[0]["scores"])
        lines += [
            "",
            f"| {gen_cells[0]['gpu']} batch | " + " | ".join(rules) + " |",
            "|---|" + "---|" * len(rules),
        ]
        for c in gen_cells:
            lines.append(
                f"| {c['batch']} | "
                + " | ".join(
                    f"{c['scores'][r]['spearman']:.3f} / {c['scores'][r]['mdape']:.1%}"
                    for r in rules
                )
                + " |"
            )
    return "\n".join(lines) + "\n"


def _by_gpu(cells: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for c in cells:
        out.setdefault(c["gpu"], []).append(c)
    return list(out.values())


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--half",
        choices=("dev", "heldout"),
        required=True,
        help="which half of HELP's OFA networks to score",
    )
    p.add_argument("--data", default=str(H.DEFAULT_DATA), help="folder of HELP's CSV files")
    p.add_argument("--sample", type=int, default=400, help="networks (default 400)")
    p.add_argument("--seed", type=int, default=5, help="sampling seed (default 5)")
    p.add_argument(
        "--out", default=None, help=f"output path without suffix (default {DEFAULT_OUT}_HALF)"
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.sample < 3:
        raise SystemExit(f"--sample={args.sample} must be at least 3 (a Spearman needs 3)")
    prov = provenance_start("experiments/depthwise_transfer.py", argv)
    res = run(args)
    prov = provenance_finish(prov)
    out = Path(args.out or f"{DEFAULT_OUT}_{args.half}")
    print(f"wrote {write_record(out, prov, res, to_markdown)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
