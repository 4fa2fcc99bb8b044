"""ShuffleNet V2 guidelines G1 and G2 on this CPU: measured and predicted side by side.

Ma et al., "ShuffleNet V2", ECCV 2018, Sec. 2 and Tables 1-2: a network of 10
blocks, each two 1x1 convolutions, on a 56x56 input;
- G1: c1 -> c2 -> c1 at fixed MACs (c1 * c2 constant) for c1:c2 = 1:1, 1:2,
  1:6, 1:12; equal widths minimise memory access cost (MAC);
- G2: c -> c 1x1 group convolutions at fixed MACs (c^2 / g constant) for
  g = 1, 2, 4, 8; more groups, more memory access at equal MACs.
Widths are the paper's Table 1 / Table 2 rows ("x1" level). MACs are
multiply-accumulates (what the paper and the seed call FLOPs). Measured: wall
clock (time.perf_counter, through ``costmodel._measure.sample_calls``), the
median of interleaved rounds with the p10-p90 spread, the lower decile beside
it (the statistic the calibration fits).

    .venv/bin/python experiments/shufflenet_guidelines.py \
        --hw experiments/results/calibrated_cpu.toml

writes experiments/results/shufflenet_guidelines.{json,md}.

    .venv/bin/python experiments/shufflenet_guidelines.py --gpu-only

times nothing: it sets the paper's GTX 1080 Ti rates beside what the built-in
``gtx1080ti`` profile predicts for the device chain, in
experiments/results/shufflenet_guidelines_gpu.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from _provenance import (
    WALL_CLOCK,
    header_lines,
    provenance_finish,
    provenance_start,
    wall_stats,
)
from torch import nn

from costmodel import LayerSpec, analyze
from costmodel._measure import sample_calls, steady_state_allocator
from hw_profiles import load

# (c1, c2) and (c, g) from Ma et al. 2018, Table 1 and Table 2 (x1 rows).
G1_ROWS = [("1:1", 128, 128), ("1:2", 90, 180), ("1:6", 52, 312), ("1:12", 36, 432)]
G2_ROWS = [(1, 128), (2, 180), (4, 256), (8, 360)]
# Paper's GTX 1080Ti batches/s for the same rows (transcribed; not checked against the PDF).
# The paper times device work: its 20 convs at 2451 batches/s leave no room for an eager
# host chain, so they are set beside the device chain ("graph" runtime) at batch 1. That
# is 2.06 GFLOP at 5.0 TFLOPS, 45% of the card's fp32 peak; batch 8 would need 40 TFLOPS.
# Table 1's 1:1 row and Table 2's g=1 row are the same network at 1480 and 2451
# batches/s: the tables were timed under different conditions, so compare slowdowns
# within a table, not rates across them.
G1_PAPER_GPU = [1480, 1296, 876, 748]
G2_PAPER_GPU = [2451, 1725, 1026, 634]
BLOCKS = 10


def net(widths: list[tuple[int, int, int]]) -> tuple[nn.Module, list[tuple[int, int, int]]]:
    """1x1 convs (cin, cout, groups) in sequence, no bias, as the paper's blocks."""
    return nn.Sequential(*[nn.Conv2d(a, b, 1, groups=g, bias=False) for a, b, g in widths]), widths


def specs(widths: list[tuple[int, int, int]], batch: int, size: int) -> list[LayerSpec]:
    out, prev = [], "input"
    for i, (a, b, g) in enumerate(widths):
        out.append(
            LayerSpec("conv2d", (batch, a, size, size), b, groups=g, name=str(i), inputs=(prev,))
        )
        prev = str(i)
    return out


def run(hw_path: str, batch: int, size: int, rounds: int) -> dict[str, Any]:
    torch.set_num_threads(1)
    steady_state_allocator()  # as calibration and validation measure
    hw = load(hw_path)
    rows_in = cases()
    models = [net(w)[0].eval() for _, _, w in rows_in]
    xs = [torch.randn(batch, w[0][0], size, size) for _, _, w in rows_in]
    # As `costmodel validate` measures: one pass per case per round, interleaved
    # rounds, wall clock; the median of the samples, with the p10-p90 spread.
    calls = [lambda m=m, x=x: m(x) for m, x in zip(models, xs, strict=True)]
    with torch.inference_mode():
        samples = sample_calls(calls, "cpu", rounds=rounds, clock="wall")
    rows = []
    for (guide, label, w), ts in zip(rows_in, samples, strict=True):
        stats = wall_stats(ts)
        rep = analyze(specs(w, batch, size), hw, "fp32", "eager")
        rows.append(
            {
                "guideline": guide,
                "case": label,
                "macs": rep.total.macs,
                "mac_bytes": rep.total.mac_bytes,
                "measured_ms": stats["median_s"] * 1e3,
                "measured_p10_ms": stats["p10_s"] * 1e3,
                "measured_p90_ms": stats["p90_s"] * 1e3,
                "predicted_ms": rep.total.latency_s * 1e3,
                "measured_batches_per_s": 1 / stats["median_s"],
                "predicted_batches_per_s": 1 / rep.total.latency_s,
            }
        )
    return {
        "hw": hw_path,
        "profile_source": hw.source,
        "batch": batch,
        "size": size,
        "blocks": BLOCKS,
        "threads": 1,
        "rounds": rounds,
        "torch": torch.__version__,
        "clock": WALL_CLOCK,
        "statistic": "median of the rounds' samples (p10-p90 spread)",
        "rows": rows,
    }


def cases() -> list[tuple[str, str, list[tuple[int, int, int]]]]:
    """(guideline, label, the convs' (cin, cout, groups)) per row of Tables 1 and 2."""
    out = [("G1", f"c1:c2={r} ({a},{b})", [(a, b, 1), (b, a, 1)] * BLOCKS) for r, a, b in G1_ROWS]
    out += [("G2", f"g={g} (c={c})", [(c, c, g), (c, c, g)] * BLOCKS) for g, c in G2_ROWS]
    return out


def run_gpu(gpu_hw: str, size: int) -> dict[str, Any]:
    """The paper's GTX 1080 Ti rates beside ``gpu_hw``'s device chain at batch 1."""
    hw = load(gpu_hw)
    rows = []
    for (guide, label, w), paper in zip(cases(), G1_PAPER_GPU + G2_PAPER_GPU, strict=True):
        rep = analyze(specs(w, 1, size), hw, "fp32", "graph")
        rows.append({"guideline": guide, "case": label, "macs": rep.total.macs,
                     "mac_bytes": rep.total.mac_bytes, "paper_batches_per_s": paper,
                     "predicted_batches_per_s": 1 / rep.total.latency_s})  # fmt: skip
    return {"hw": gpu_hw, "profile_source": hw.source, "size": size, "rows": rows}


def to_markdown_gpu(res: dict[str, Any]) -> str:
    lines = [
        "# ShuffleNet V2 guidelines G1, G2 on a GTX 1080 Ti: the paper's rates vs predicted",
        "",
        *header_lines(res["provenance"]),
        "",
        f"Nothing timed here. {BLOCKS} blocks of two 1x1 convs, input {res['size']}x"
        f"{res['size']}, batch 1, fp32. Paper: Ma et al. 2018, Tables 1-2, GTX 1080 Ti "
        "(transcribed, not checked against the PDF; the two tables time the same g=1 / 1:1 "
        "network at 2451 and 1480 batches/s, so only slowdowns within a table compare). "
        f"Predicted: `costmodel.analyze` with `{res['hw']}`, `graph` runtime (the device "
        "chain: the paper timed device work, not an eager host). MACs = multiply-"
        'accumulates (the paper\'s "FLOPs").',
        "",
        "| guideline | case | MACs | MAC bytes | paper batches/s | predicted batches/s |",
        "|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        lines.append(
            f"| {r['guideline']} | {r['case']} | {r['macs']:,} | {r['mac_bytes']:,} | "
            f"{r['paper_batches_per_s']} | {r['predicted_batches_per_s']:.0f} |"
        )
    for g in ("G1", "G2"):
        rows = [r for r in res["rows"] if r["guideline"] == g]
        paper = [r["paper_batches_per_s"] for r in rows]
        pred = [r["predicted_batches_per_s"] for r in rows]
        lines += ["", f"{g}: slowdown from first to last case, paper x{paper[0] / paper[-1]:.2f}, "
                  f"predicted x{pred[0] / pred[-1]:.2f}."]  # fmt: skip
    return "\n".join(lines) + "\n"


def to_markdown(res: dict[str, Any]) -> str:
    lines = [
        "# ShuffleNet V2 guidelines G1, G2 on this CPU: measured vs predicted",
        "",
        *header_lines(res["provenance"]),
        "",
        f"{res['blocks']} blocks of two 1x1 convs, input {res['size']}x{res['size']}, batch "
        f"{res['batch']}, fp32, {res['threads']} torch thread, eager; measured: "
        f"{res['clock']}, the median of {res['rounds']} interleaved rounds with the p10-p90 "
        "spread and the lower decile (p10, the statistic calibration fits) beside it; "
        f"predicted: `costmodel.analyze` with `{res['hw']}` ({res['profile_source']}). "
        'MACs = multiply-accumulates (the paper\'s "FLOPs"); batches/s = 1 / median.',
        "",
        "| guideline | case | MACs | MAC bytes | measured median ms | p10-p90 ms | "
        "predicted ms | measured batches/s | predicted batches/s | paper GPU batches/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    paper = G1_PAPER_GPU + G2_PAPER_GPU
    for r, p in zip(res["rows"], paper, strict=True):
        lines.append(
            f"| {r['guideline']} | {r['case']} | {r['macs']:,} | {r['mac_bytes']:,} | "
            f"{r['measured_ms']:.2f} | {r['measured_p10_ms']:.2f}-{r['measured_p90_ms']:.2f} | "
            f"{r['predicted_ms']:.2f} | "
            f"{r['measured_batches_per_s']:.1f} | {r['predicted_batches_per_s']:.1f} | {p} |"
        )
    for g in ("G1", "G2"):
        rows = [r for r in res["rows"] if r["guideline"] == g]
        m = [r["measured_ms"] for r in rows]
        lo = [r["measured_p10_ms"] for r in rows]
        q = [r["predicted_ms"] for r in rows]
        lines += [
            "",
            f"{g}: measured (median) slowdown from first to last case x{m[-1] / m[0]:.2f} "
            f"(lower decile x{lo[-1] / lo[0]:.2f}), predicted x{q[-1] / q[0]:.2f}; measured "
            f"order {'increasing' if m == sorted(m) else 'not monotone'}, predicted order "
            f"{'increasing' if q == sorted(q) else 'not monotone'}.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--hw",
        default="experiments/results/calibrated_cpu.toml",
        help="profile to predict with (default: the calibrated CPU profile)",
    )
    p.add_argument(
        "--gpu-only",
        action="store_true",
        help="time nothing: the paper's GTX 1080 Ti rates beside --gpu-hw's "
        "predictions (writes shufflenet_guidelines_gpu.{json,md})",
    )
    p.add_argument("--gpu-hw", default="gtx1080ti", help="GPU profile (default gtx1080ti)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--size", type=int, default=56, help="input height = width (paper: 56)")
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--out", default="experiments/results", help="output folder")
    args = p.parse_args(argv)
    if min(args.batch, args.size, args.rounds) < 1:
        print("shufflenet_guidelines: --batch, --size and --rounds must be >= 1", file=sys.stderr)
        return 2
    prov = provenance_start("experiments/shufflenet_guidelines.py", argv)
    if args.gpu_only:
        res = run_gpu(args.gpu_hw, args.size)
        res["provenance"] = provenance_finish(prov).to_dict()
        print(write_gpu(Path(args.out), res))
        return 0
    res = run(args.hw, args.batch, args.size, args.rounds)
    prov = provenance_finish(prov)
    res["command"] = prov.command
    res["provenance"] = prov.to_dict()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "shufflenet_guidelines.json").write_text(json.dumps(res, indent=1) + "\n")
    md = to_markdown(res)
    (out / "shufflenet_guidelines.md").write_text(md)
    print(md)
    return 0


def write_gpu(out: Path, res: dict[str, Any]) -> str:
    out.mkdir(parents=True, exist_ok=True)
    (out / "shufflenet_guidelines_gpu.json").write_text(json.dumps(res, indent=1) + "\n")
    md = to_markdown_gpu(res)
    (out / "shufflenet_guidelines_gpu.md").write_text(md)
    return md


if __name__ == "__main__":
    raise SystemExit(main())
