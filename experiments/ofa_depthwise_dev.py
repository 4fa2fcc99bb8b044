"""Development-half checks behind the depthwise refit: residuals by kernel size and
two profile sets side by side.

On HELP's once-for-all subnets with even ``arch_idx`` (the development half; the 40
networks help_fit's OFA step fits are left out), for every OFA GPU at batch 1, 32 and 64:

1. Spearman of log(measured / predicted) against the share of the predicted time
   spent in 3x3, 5x5 and 7x7 depthwise convs and in 1x1 convs. A model that costs a
   depthwise conv the same at every kernel size leaves the 7x7 share correlated with
   its residuals.
2. Spearman and MdAPE of each profile set: the built-in profiles, and the same
   profiles as committed at ``--before`` (a git revision).

Nothing here touches the held-out half (odd ``arch_idx``).

    python experiments/ofa_depthwise_dev.py --before dac993b    # the recorded run
    python experiments/ofa_depthwise_dev.py --before HEAD --sample 40 --out /tmp/od
"""

from __future__ import annotations

import argparse
import math
import random
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
import help_fit as H
from _provenance import provenance_finish, provenance_start, write_record

import costmodel
import hw_profiles
from hw_profiles import HardwareProfile
from searchspace import OFANet

DEFAULT_OUT = H._ROOT / "experiments" / "results" / "ofa_depthwise_dev"
BATCHES = (1, 32, 64)
SHARES = ("depthwise_conv_k3", "depthwise_conv_k5", "depthwise_conv_k7", "pointwise_conv")


def dev_networks(ofa: list[H.Net], sample: int, seed: int) -> list[H.Net]:
    """``sample`` development-half networks, none of those help_fit's OFA step fits."""
    dev = [n for n in ofa if H.is_dev(n)]
    fitted = {int(n.row["arch_idx"]) for n in random.Random(H.PRIOR_SEED).sample(
        dev, H.OFA_PRIOR_NETS)}  # fmt: skip
    rest = [n for n in dev if int(n.row["arch_idx"]) not in fitted]
    random.Random(seed).shuffle(rest)
    return rest[:sample]


def profiles_at(rev: str, names: Sequence[str], folder: Path) -> dict[str, HardwareProfile]:
    """The built-in profiles ``names`` as committed at git revision ``rev``."""
    out = {}
    for name in names:
        text = subprocess.run(
            ["git", "show", f"{rev}:hw_profiles/data/{name}.toml"],
            cwd=H._ROOT, check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        path = folder / f"{name}.toml"
        path.write_text(text)
        out[name] = hw_profiles.load_fresh(path)
    return out


def time_shares(net: H.Net, batch: int, hw: HardwareProfile) -> dict[str, float]:
    """Share of the predicted layer time per kernel class, depthwise split by kernel size."""
    specs = net.net.eager_layers(batch)
    rep = costmodel.analyze(list(specs), hw, "fp32", "eager")
    shares: dict[str, float] = {}
    for layer, spec in zip(rep.layers, specs, strict=True):
        key = layer.kernel_class
        if key == "depthwise_conv":
            key += f"_k{spec.kernel_size[0]}"
        shares[key] = shares.get(key, 0.0) + layer.latency_s
    total = sum(shares.values())
    return {k: v / total for k, v in shares.items()}


def residual_correlations(
    nets: list[H.Net], gpu: str, batch: int, hw: HardwareProfile
) -> dict[str, float]:
    rows = [H.measured_network(n, gpu, batch) for n in nets]
    pred = H.predict_networks(hw, rows)
    resid = [math.log(r.latency_s / p) for r, p in zip(rows, pred, strict=True)]
    shares = [time_shares(n, batch, hw) for n in nets]
    return {k: float(stats.spearmanr([s.get(k, 0.0) for s in shares], resid).statistic)
            for k in SHARES}  # fmt: skip


def run(args: argparse.Namespace) -> dict[str, Any]:
    ofa = H.read(Path(args.data) / "help_ofa_latency.csv", OFANet.from_help_row)
    nets = dev_networks(ofa, args.sample, args.seed)
    names = sorted(set(H.OFA_GPUS.values()))
    now = {name: hw_profiles.load(name) for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        before = profiles_at(args.before, names, Path(tmp))
    cells = []
    for gpu, name in H.OFA_GPUS.items():
        for b in BATCHES:
            rows = [H.measured_network(n, gpu, b) for n in nets]
            meas = [r.latency_s for r in rows]
            cell: dict[str, Any] = {"gpu": gpu, "batch": b, "n": len(rows)}
            for tag, hw in (("before", before[name]), ("now", now[name])):
                cell[tag] = H.agreement(H.predict_networks(hw, rows), meas)
                if b != 1:
                    cell[tag]["residual_spearman"] = residual_correlations(nets, gpu, b, hw)
            cells.append(cell)
            print(
                f"{gpu} b{b}: before {cell['before']['spearman']:.3f} / "
                f"{cell['before']['mdape']:.1%}, now {cell['now']['spearman']:.3f} / "
                f"{cell['now']['mdape']:.1%}",
                flush=True,
            )
    return {"before": args.before, "sample": len(nets), "seed": args.seed, "cells": cells}


def to_markdown(res: dict[str, Any], header: list[str]) -> str:
    lines = [
        "# OFA development half: depthwise residuals and two profile sets",
        "",
        *header,
        "",
        f"{res['sample']} development-half OFA networks (even `arch_idx`, none of the "
        f"{H.OFA_PRIOR_NETS} help_fit's OFA step fits; seed {res['seed']}). 'before': the "
        f"built-in profiles at git revision `{res['before']}`; 'now': the built-in "
        "profiles. Residual columns: Spearman of log(measured / predicted) against the "
        "share of predicted time in 3x3 / 5x5 / 7x7 depthwise convs and in 1x1 convs "
        "(batch 32 and 64).",
        "",
        "| GPU | batch | before rho | MdAPE | now rho | MdAPE | before k3 / k5 / k7 / 1x1 "
        "| now k3 / k5 / k7 / 1x1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in res["cells"]:
        resid = [
            "-"
            if "residual_spearman" not in c[t]
            else " / ".join(f"{c[t]['residual_spearman'][k]:+.2f}" for k in SHARES)
            for t in ("before", "now")
        ]
        lines.append(
            f"| {c['gpu']} | {c['batch']} | {c['before']['spearman']:.3f} | "
            f"{c['before']['mdape']:.1%} | {c['now']['spearman']:.3f} | "
            f"{c['now']['mdape']:.1%} | {resid[0]} | {resid[1]} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--before", required=True, help="git revision of the profiles to compare")
    p.add_argument("--data", default=str(H.DEFAULT_DATA), help="folder of HELP's CSV files")
    p.add_argument("--sample", type=int, default=400, help="networks (default 400)")
    p.add_argument("--seed", type=int, default=3, help="sampling seed (default 3)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="output path without suffix")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.sample < 3:
        raise SystemExit(f"--sample={args.sample} must be at least 3 (a Spearman needs 3)")
    prov = provenance_start("experiments/ofa_depthwise_dev.py", argv)
    res = run(args)
    prov = provenance_finish(prov)
    print(f"wrote {write_record(Path(args.out), prov, res, to_markdown)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
