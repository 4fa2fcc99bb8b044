"""What a recorded CPU calibration says about kernels timed alone against kernels in a chain.

Calibration times each single kernel among 31 others (``measure_in_context``): its input
was last touched dozens of kernels earlier. Inside a network a kernel reads what the one
before it has just written. The op chains (the same op repeated 16 or 32 times) are timed
as networks are, so the slope between the 16- and 32-op ReLU chains is a ReLU's cost with
its input hot. This script reads recorded calibrations and sets the two side by side:
the element-wise benchmarks' rates, the ReLU chains' per-op rates and the times of
PyTorch's plain 1x1 native convs (no im2col column buffer), which the model prices at
one fixed cost with the k x k native convs. Nothing is timed.

    python experiments/calibration_context.py \\
        --calibration experiments/results/xeon_2026-12-03_c \\
        --out experiments/results/xeon_2026-12-03_d/calibration_context
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _provenance import provenance_finish, provenance_start, write_record  # noqa: E402
from im2col_l2_ablation import column_elements  # noqa: E402

from costmodel._calibrate import spec_from_dict  # noqa: E402
from costmodel._formulas import count  # noqa: E402
from costmodel._kinds import latency_class  # noqa: E402
from costmodel._report import layer_mac_bytes  # noqa: E402
from costmodel._spec import LayerSpec  # noqa: E402


def summarise(raw: dict[str, Any]) -> dict[str, Any]:
    """Element-wise benchmarks (bytes, seconds), ReLU chain slopes per shape and the plain
    1x1 native convs' times of one recorded calibration."""
    elementwise, pointwise = [], []
    for b in raw["benchmarks"]:
        spec = spec_from_dict(b["spec"])
        cls = latency_class(spec, "pytorch_cpu", 1)
        if cls == "elementwise":
            elementwise.append({"bytes": layer_mac_bytes(count(spec), "fp32"), "s": b["time_s"]})
        elif cls == "native_conv" and column_elements(spec) == 0:
            pointwise.append({"in_shape": list(spec.in_shape), "out_channels": spec.out_channels,
                              "macs": count(spec).macs, "s": b["time_s"]})  # fmt: skip
    relu: dict[LayerSpec, dict[int, float]] = {}  # a chain's first ReLU -> {length: seconds}
    for c in raw.get("op_chains", []):
        first = spec_from_dict(c["layers"][0])
        if first.op == "relu":
            relu.setdefault(first, {})[len(c["layers"])] = c["time_s"]
    chains = []
    for spec, by_n in relu.items():
        if 16 in by_n and 32 in by_n:
            chains.append({"in_shape": list(spec.in_shape), "per_op_s": (by_n[32] - by_n[16]) / 16,
                           "bytes": layer_mac_bytes(count(spec), "fp32")})  # fmt: skip
    return {"elementwise": elementwise, "relu_chains": chains, "native_1x1": pointwise}


BINS_MB = (0.5, 2.0, 8.0)  # working-set bins: inside L2, around it, L3-sized, beyond


def _bin(nbytes: float) -> str:
    edges = (0.0, *BINS_MB, float("inf"))
    i = next(i for i in range(len(BINS_MB) + 1) if nbytes / 1e6 < edges[i + 1])
    hi = f"{edges[i + 1]:g} MB" if edges[i + 1] != float("inf") else "up"
    return f"{edges[i]:g} MB-{hi}"


def _median_rate(items: list[tuple[float, float]]) -> str:
    """'median GB/s (n)' of (bytes, seconds) pairs."""
    if not items:
        return "-"
    rates = sorted(b / t / 1e9 for b, t in items)
    return f"{statistics.median(rates):.0f} ({len(rates)})"


def to_markdown(res: dict[str, Any], header: list[str]) -> str:
    lines = ["# Kernels timed alone vs in a chain, from recorded calibrations", "", *header, "",
             __doc__.split("\n\n")[1].replace("\n", " "), "",
             "Median GB/s (count) by working set (MAC bytes): element-wise benchmarks timed "
             "alone among others, ReLUs inside their chains (slope of 32 vs 16).", "",
             "| calibration | working set | element-wise alone | ReLU in a chain |",
             "|---|---|---|---|"]  # fmt: skip
    for name, s in res["calibrations"].items():
        for label in (_bin(edge * 1e6) for edge in (0.0, *BINS_MB)):
            alone = [(e["bytes"], e["s"]) for e in s["elementwise"] if _bin(e["bytes"]) == label]
            chain = [(c["bytes"], c["per_op_s"]) for c in s["relu_chains"]
                     if _bin(c["bytes"]) == label]  # fmt: skip
            lines.append(f"| {name} | {label} | {_median_rate(alone)} | {_median_rate(chain)} |")
    lines += [
        "",
        "Plain 1x1 native convs timed alone among others, microseconds:",
        "",
        "| calibration | batch 1: n, min-max | batch > 1: n, min-max |",
        "|---|---|---|",
    ]
    for name, s in res["calibrations"].items():
        cells = []
        for single in (True, False):
            us = [p["s"] * 1e6 for p in s["native_1x1"] if (p["in_shape"][0] == 1) == single]
            cells.append(f"{len(us)}, {min(us):.0f}-{max(us):.0f}" if us else "0, -")
        lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calibration", type=Path, action="append", required=True,
                   help="folder with calibration_cpu_raw.json; repeatable")  # fmt: skip
    p.add_argument("--out", type=Path, required=True, help="record path, without suffix")
    args = p.parse_args(argv)
    prov = provenance_start("experiments/calibration_context.py", argv)
    res = {"calibrations": {f.name: summarise(json.loads((f / "calibration_cpu_raw.json")
                                                         .read_text()))
                            for f in args.calibration}}  # fmt: skip
    md = write_record(args.out, provenance_finish(prov), res, to_markdown)
    print(md.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
