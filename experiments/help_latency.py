"""Zero-shot check of the latency model against published GPU measurements.

Reads HELP's tables (Lee et al., NeurIPS 2021: NAS-Bench-201 cells and
once-for-all MobileNetV3 subnets, eager PyTorch, milliseconds per forward pass
of the whole batch) and DeepBench's single cuDNN convolutions, predicts every
measurement with the built-in profile of the device (no fitting: "zero-shot")
and reports, per (space, device, batch): Spearman and Kendall rank
correlation, the median absolute percentage error (MdAPE), the share of
predictions within +-10% and +-25%, the median predicted / measured ratio,
and the Spearman correlation of three baselines that need no latency model:
FLOPs, MAC bytes (memory access cost) and the number of kernels the reference
code launches in eager mode.

    python experiments/help_latency.py                  # the recorded run (1,000 nets per space)
    python experiments/help_latency.py --sample 50 --out /tmp/hl   # smoke run

Conventions: FLOPs = 2 x MACs (multiply-accumulates); MAC bytes at the
precision (fp32: 4 bytes per element). Networks are lowered with
``NB201Net.lower`` / ``OFANet.lower`` and costed with ``costmodel.analyze``.
DeepBench times the cuDNN call alone, without a framework, so its convolutions
are predicted with the ``graph`` runtime (device cost per kernel, no host
dispatch); HELP's networks with ``--runtime`` (default ``eager``).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import random
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scipy import stats

# The script lives in experiments/; make the repository importable however it is run.
_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import costmodel  # noqa: E402
from costmodel import LayerSpec  # noqa: E402
from searchspace import NB201Net, OFANet  # noqa: E402

DEFAULT_DATA = _ROOT.parent / "shared" / "data" / "latency"
DEFAULT_OUT = _ROOT / "experiments" / "results" / "help_latency_zeroshot"
MS = 1e-3


@dataclass(frozen=True)
class Space:
    csv: str
    parse: Callable[[dict[str, str]], NB201Net | OFANet]
    batches: tuple[int, ...]
    devices: dict[str, str]  # HELP's column prefix -> built-in profile
    unmapped: tuple[str, ...]  # columns without a profile (reported as missing)
    # Columns timed at one batch, named without it (HELP's CPUs: batch 1) -> profile.
    batch1_columns: dict[str, str] = field(default_factory=dict)


SPACES: dict[str, Space] = {
    "nb201": Space(
        "help_nb201_latency.csv",
        NB201Net.from_help_row,
        (1, 32, 256),
        {
            "1080ti": "gtx1080ti",
            "2080ti": "rtx2080ti",
            "titan_rtx": "titan-rtx",
            # Pascal, not the 2015 Maxwell card: see the profile's notes.
            "titanx": "titan-x-pascal",
            "titanxp": "titan-xp",
        },
        (),
        {
            "gold_6226": "xeon-gold-6226",
            "gold_6240": "xeon-gold-6240",
            "silver_4114": "xeon-silver-4114",
            "silver_4210r": "xeon-silver-4210r",
        },
    ),
    "ofa": Space(
        "help_ofa_latency.csv",
        OFANet.from_help_row,
        (1, 32, 64),
        {"2080ti": "rtx2080ti", "titan_rtx": "titan-rtx", "titan_xp": "titan-xp", "v100": "v100"},
        (),
    ),
}
DEEPBENCH_GPUS = {
    "NVIDIA GTX 1080 Ti": "gtx1080ti",
    "NVIDIA GTX TitanXp": "titan-xp",
    "Nvidia TitanX Pascal": "titan-x-pascal",
    "NVIDIA V100": "v100",
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="help_latency.py",
        description="Predicted vs measured latency on HELP's NAS-Bench-201 and OFA tables "
        "and DeepBench's convolutions, with the built-in profiles (no fitting).",
    )
    p.add_argument("--data", default=str(DEFAULT_DATA), help="folder of the CSV files")
    p.add_argument("--sample", type=int, default=1000, help="networks per space (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--precision", default="fp32", help="precision (default fp32)")
    p.add_argument("--runtime", default="eager", help="runtime for HELP's networks (eager)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="output path without suffix")
    p.add_argument("--json", action="store_true", help="print the result JSON to stdout")
    args = p.parse_args(argv)
    if args.sample < 3:
        p.error(f"--sample={args.sample} must be >= 3 (rank correlations need points)")
    return args


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        raise SystemExit(f"error: {path} does not exist (pass --data FOLDER)")
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def agreement(pred: Sequence[float], meas: Sequence[float]) -> dict[str, float]:
    """Rank agreement and error in seconds of predictions against measurements."""
    ratios = [p / m for p, m in zip(pred, meas, strict=True)]
    errors = [abs(r - 1.0) for r in ratios]
    return {
        "spearman": float(stats.spearmanr(pred, meas).statistic),
        "kendall": float(stats.kendalltau(pred, meas).statistic),
        "mdape": statistics.median(errors),
        "within_10": sum(e <= 0.10 for e in errors) / len(errors),
        "within_25": sum(e <= 0.25 for e in errors) / len(errors),
        "median_ratio": statistics.median(ratios),
    }


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    return float(stats.spearmanr(x, y).statistic)


def run_space(name: str, space: Space, args: argparse.Namespace) -> dict[str, Any]:
    rows = read_rows(Path(args.data) / space.csv)
    picked = random.Random(args.seed).sample(rows, min(args.sample, len(rows)))
    nets = [space.parse(r) for r in picked]
    kernels = [net.eager_kernels() for net in nets]
    results = []
    for batch in space.batches:
        lowered: dict[NB201Net | OFANet, tuple[LayerSpec, ...]] = {}
        for net in nets:
            if net not in lowered:
                lowered[net] = net.eager_layers(batch)
        work: dict[NB201Net | OFANet, tuple[int, int]] = {}
        columns = {f"{c}_{batch}": (c, hw) for c, hw in space.devices.items()}
        if batch == 1:
            columns |= {c: (c, hw) for c, hw in space.batch1_columns.items()}
        for key, (column, hw) in columns.items():
            pred, meas = [], []
            for net, row in zip(nets, picked, strict=True):
                rep = costmodel.analyze(lowered[net], hw, args.precision, args.runtime)
                work[net] = (rep.total.flops, rep.total.mac_bytes)
                pred.append(rep.total.latency_s)
                meas.append(float(row[key]) * MS)
            flops = [work[n][0] for n in nets]
            mac_bytes = [work[n][1] for n in nets]
            results.append({
                "space": name,
                "device": column,
                "profile": hw,
                "batch": batch,
                "n": len(nets),
                **agreement(pred, meas),
                "measured_median_ms": statistics.median(meas) / MS,
                "predicted_median_ms": statistics.median(pred) / MS,
                "baseline_spearman": {
                    "flops": spearman(flops, meas),
                    "mac_bytes": spearman(mac_bytes, meas),
                    "eager_kernels": spearman(kernels, meas),
                },
            })  # fmt: skip
    return {
        "rows": len(rows),
        "sampled": len(nets),
        "distinct": len(set(nets)),
        "results": results,
        "missing": list(space.unmapped),
    }


def deepbench_spec(r: dict[str, str]) -> LayerSpec:
    n, c, h, w, k, kh, kw, ph, pw, sh, sw = (
        int(float(r[f]))
        for f in ("N", "C", "H", "W", "K", "R", "S", "pad_h", "pad_w", "stride_h", "stride_w")
    )
    return LayerSpec("conv2d", (n, c, h, w), out_channels=k, kernel_size=(kh, kw),
                     stride=(sh, sw), padding=(ph, pw))  # fmt: skip


def run_deepbench(args: argparse.Namespace) -> dict[str, Any]:
    rows = [r for r in read_rows(Path(args.data) / "deepbench_conv.csv")
            if r["precision_note"] == "Float"]  # fmt: skip
    results = []
    for gpu, hw in DEEPBENCH_GPUS.items():
        mine = [r for r in rows if r["gpu"] == gpu]
        specs = [deepbench_spec(r) for r in mine]
        pred = [costmodel.analyze([s], hw, "fp32", "graph").total.latency_s for s in specs]
        meas = [float(r["fwd_ms"]) * MS for r in mine]
        counts = [costmodel.count(s) for s in specs]
        results.append({
            "gpu": gpu,
            "profile": hw,
            "n": len(mine),
            **agreement(pred, meas),
            "baseline_spearman": {
                "flops": spearman([2 * c.macs for c in counts], meas),
                "mac_bytes": spearman([4 * c.mac_elements for c in counts], meas),
            },
        })  # fmt: skip
    missing = sorted({r["gpu"] for r in rows} - set(DEEPBENCH_GPUS))
    return {"results": results, "missing": missing}


def run(args: argparse.Namespace) -> dict[str, Any]:
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    spaces = {name: run_space(name, sp, args) for name, sp in SPACES.items()}
    deepbench = run_deepbench(args)
    return {
        "command": "python " + " ".join(shlex.quote(a) for a in [_rel(sys.argv[0]), *sys.argv[1:]]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs)",
        "loadavg_start": list(load0),
        "loadavg_end": list(os.getloadavg()),
        "elapsed_s": time.perf_counter() - t0,
        "sample": args.sample,
        "seed": args.seed,
        "precision": args.precision,
        "runtime": args.runtime,
        "spaces": spaces,
        "deepbench": deepbench,
    }


def _rel(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(_ROOT))
    except ValueError:
        return path


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def to_markdown(res: dict[str, Any]) -> str:
    lines = [
        "# Latency model against HELP's and DeepBench's GPU and CPU measurements (zero-shot)",
        "",
        "```",
        res["command"],
        "```",
        "",
        f"{res['date']} on {res['machine']}; load average {res['loadavg_start'][0]:.2f} at start, "
        f"{res['loadavg_end'][0]:.2f} at end; {res['elapsed_s']:.0f} s.",
        "",
        f"Built-in profiles as they ship, {res['precision']}, runtime `{res['runtime']}` for "
        "HELP's eager-PyTorch networks. MdAPE: median |predicted / measured - 1|; "
        "ratio: median predicted / measured. Baselines are Spearman correlations of "
        "FLOPs (2 x MACs), MAC bytes and the number of kernels the reference code "
        "launches eagerly (`eager_kernels`) with the measured latency.",
        "",
        "Not a held-out figure: the GPU and CPU profiles' eager costs and efficiencies were fitted "
        "to HELP networks with even `arch_idx` (experiments/help_fit.py), and this sample "
        "draws from both halves. Networks are costed as their reference code runs them "
        "(`eager_layers`: NAS-Bench-201's node sums from `0 + x`, OFA's h_swish as its four "
        "element-wise kernels) but without the second mean of OFA's global pools, a kernel "
        "no layer stands for. experiments/results/help_fit.md reports the odd, "
        "held-out half with those kernels counted.",
        "",
    ]
    head = ["device", "profile", "batch", "n", "Spearman", "Kendall", "MdAPE", "±10%", "±25%",
            "ratio", "measured ms", "FLOPs ρ", "MAC bytes ρ", "kernels ρ"]  # fmt: skip
    for name, sp in res["spaces"].items():
        lines += [f"## {name}: {sp['sampled']} of {sp['rows']} networks "
                  f"(seed {res['seed']}, {sp['distinct']} distinct)", "",
                  _row(head), _row(["---"] * 3 + ["---:"] * (len(head) - 3))]  # fmt: skip
        for r in sp["results"]:
            b = r["baseline_spearman"]
            lines.append(_row([
                r["device"], r["profile"], str(r["batch"]), str(r["n"]),
                f"{r['spearman']:.3f}", f"{r['kendall']:.3f}", f"{100 * r['mdape']:.0f}%",
                f"{100 * r['within_10']:.0f}%", f"{100 * r['within_25']:.0f}%",
                f"{r['median_ratio']:.2f}", f"{r['measured_median_ms']:.2f}",
                f"{b['flops']:.3f}", f"{b['mac_bytes']:.3f}", f"{b['eager_kernels']:.3f}",
            ]))  # fmt: skip
        if sp["missing"]:
            lines += ["", "No profile (not predicted): " + ", ".join(sp["missing"]) + "."]
        lines.append("")
    db = res["deepbench"]
    head = ["GPU", "profile", "n", "Spearman", "Kendall", "MdAPE", "±10%", "±25%", "ratio",
            "FLOPs ρ", "MAC bytes ρ"]  # fmt: skip
    lines += ["## DeepBench single convolutions (fp32 forward, runtime `graph`)", "",
              _row(head), _row(["---"] * 2 + ["---:"] * (len(head) - 2))]  # fmt: skip
    for r in db["results"]:
        b = r["baseline_spearman"]
        lines.append(_row([
            r["gpu"], r["profile"], str(r["n"]), f"{r['spearman']:.3f}", f"{r['kendall']:.3f}",
            f"{100 * r['mdape']:.0f}%", f"{100 * r['within_10']:.0f}%",
            f"{100 * r['within_25']:.0f}%", f"{r['median_ratio']:.2f}",
            f"{b['flops']:.3f}", f"{b['mac_bytes']:.3f}",
        ]))  # fmt: skip
    lines += ["", "No profile (not predicted): " + ", ".join(db["missing"]) + ".", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    res = run(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    out.with_suffix(".md").write_text(to_markdown(res))
    if args.json:
        print(json.dumps(res, indent=1))
    else:
        print(to_markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
