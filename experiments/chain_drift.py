"""Did every kernel slow down alike? Op chains timed now against calibration's timings.

On the shared VM the held-out list's measured ranking moved between sessions (pairs of
sessions agree at 0.91-0.99 Spearman at batch 1), so a profile calibrated in one machine
state ranks another worse. Rescaling assumes the drift is one factor on fixed costs and one
on throughput. This script tests that assumption kernel by kernel: it times the op chains
calibration timed (``costmodel._chains``: 16 BatchNorms, ReLUs, residual adds, 3x3 average
or max pools in a row, at five sizes) and the reference network, with calibration's own
protocol, and divides each time by the one in the calibration's raw file. A uniform drift
gives one ratio for every row; a cache-sized one gives ratios that grow with the chain's
working set.

    python experiments/chain_drift.py \
        --raw experiments/results/epyc_op_chains/calibration_cpu_raw.json \
        --hw experiments/results/epyc_op_chains/calibrated_cpu.toml \
        --batch 1 --out experiments/results/epyc_rescale/chain_drift_b1.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _provenance import header_lines, provenance_finish, provenance_start  # noqa: E402

from costmodel._chains import CHAIN_DEPTH, op_chains  # noqa: E402
from costmodel._report import analyze  # noqa: E402
from costmodel._rescale import measure_probes  # noqa: E402
from hw_profiles import calibration_table, load_fresh  # noqa: E402
from searchspace import reference_architecture  # noqa: E402


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--raw", type=Path, required=True, help="calibration's --raw JSON")
    p.add_argument("--hw", type=Path, required=True, help="the profile that calibration wrote")
    p.add_argument("--batch", type=int, default=1, help="a batch the chains were timed at")
    p.add_argument("--out", type=Path, required=True, help="the Markdown report (JSON beside)")
    args = p.parse_args(argv)
    if not args.raw.is_file():
        p.error(f"--raw={str(args.raw)!r} is not a file")
    if not args.hw.is_file():
        p.error(f"--hw={str(args.hw)!r} is not a file")
    return args


def _then(raw: Path, batch: int) -> dict[str, float]:
    chains = json.loads(raw.read_text())["op_chains"]
    then = {r["chain"]: r["time_s"] for r in chains if r["batch"] == batch}
    if not then:
        raise SystemExit(f"--batch={batch}: {raw} has no op chains timed at that batch")
    return then


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    prov = provenance_start("experiments/chain_drift.py", argv)
    then = _then(args.raw, args.batch)
    hw = load_fresh(args.hw)
    chains = [c for c in op_chains() if str(c) in then]
    rows, reference_now = measure_probes(
        chains, (args.batch,), "cpu", reference=reference_architecture()
    )
    prov = provenance_finish(prov)
    reference_then = calibration_table(str(args.hw))["reference_s"][f"b{args.batch}"]
    ref_ratio = reference_now[args.batch] / reference_then
    table = []
    for chain, (layers, now_s) in zip(chains, rows, strict=True):
        predicted_s = analyze(list(layers), hw, "fp32", "eager").total.latency_s
        working_set = 4 * args.batch * chain.channels * chain.size**2  # fp32 bytes per tensor
        table.append({"chain": str(chain), "op": chain.op, "tensor_bytes": working_set,
                      "then_us_per_op": then[str(chain)] / CHAIN_DEPTH * 1e6,
                      "now_us_per_op": now_s / CHAIN_DEPTH * 1e6,
                      "predicted_us_per_op": predicted_s / CHAIN_DEPTH * 1e6,
                      "ratio": now_s / then[str(chain)]})  # fmt: skip
    ratios = [r["ratio"] for r in table]
    lines = [
        f"# Op chains now against calibration, batch {args.batch}", "",
        *header_lines(prov), "",
        f"Calibration: `{args.raw}` (profile `{args.hw}`). Ratio = time now / time at "
        "calibration (above 1: slower now). The reference network, timed in the same rounds: "
        f"{reference_now[args.batch] * 1e3:.2f} ms now, {reference_then * 1e3:.2f} ms at "
        f"calibration, ratio {ref_ratio:.2f}.", "",
        f"Chain ratios: median {statistics.median(ratios):.2f}, "
        f"range {min(ratios):.2f}-{max(ratios):.2f}.", "",
        "| chain | tensor KiB | us/op at calibration | us/op now | ratio | predicted us/op |",
        "|---|---|---|---|---|---|",
        *(f"| {r['chain']} | {r['tensor_bytes'] / 1024:.0f} | {r['then_us_per_op']:.1f} | "
          f"{r['now_us_per_op']:.1f} | {r['ratio']:.2f} | {r['predicted_us_per_op']:.1f} |"
          for r in sorted(table, key=lambda r: (r["op"], r["tensor_bytes"]))),
    ]  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    doc = {"provenance": prov.to_dict(), "reference_ratio": ref_ratio, "chains": table}
    args.out.with_suffix(".json").write_text(json.dumps(doc, indent=1, default=str))
    print("\n".join(lines[-len(table) - 2 :]))
    print(f"reference ratio {ref_ratio:.2f}; chain ratios median {statistics.median(ratios):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
