"""Predicted / measured per network family, over every recorded CPU validation of a set.

Within one validation set the families sit side by side in the same time band (the held-out
list: NAS-Bench-201 cells and once-for-all subnets, both 1-16 ms at batch 1). A bias
between families ranks the set worse than the errors within each family would: this reads
the recorded ``validation_cpu_{set}_b{batch}.json`` files (what each session's profile
predicted against what that session measured; nothing is predicted or timed here) and
prints the median ratio per family and the ratio of two families' medians, which a uniform
drift of the machine's speed leaves alone.

    python experiments/family_bias.py --set heldout --batch 1 \\
        --out experiments/results/xeon_2026-12-03_b/family_bias_heldout_b1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _provenance import provenance_finish, provenance_start, write_record  # noqa: E402

RESULTS = ROOT / "experiments" / "results"


def family(arch: str) -> str:
    """A network's family from its string, as ``costmodel validate`` records it."""
    if arch.startswith("|"):
        return "nb201"
    if arch.startswith("ofa:"):
        return "ofa"
    return arch.partition(":")[0] if ".py:" in arch else "searchspace"


def session_row(path: Path) -> dict[str, Any]:
    """One recorded validation: median predicted / measured (median) per family."""
    points = json.loads(path.read_text())["points"]
    ratios: dict[str, list[float]] = {}
    for p in points:
        ratios.setdefault(family(p["arch"]), []).append(p["predicted_s"] / p["measured_median_s"])
    medians = {f: statistics.median(r) for f, r in sorted(ratios.items())}
    return {"session": str(path.parent.relative_to(ROOT)), "n": len(points),
            "median_ratio": medians}  # fmt: skip


def to_markdown(res: dict[str, Any], header: list[str]) -> str:
    fams = res["families"]
    a, b = res["pair"]
    lines = [f"# Predicted / measured per family: {res['set']} at batch {res['batch']}", "",
             *header, "", __doc__.split("\n\n")[1].replace("\n", " "), "",
             "| session | n | " + " | ".join(fams) + f" | {a} / {b} |",
             "|---|---|" + "---|" * (len(fams) + 1)]  # fmt: skip
    for r in res["rows"]:
        med = r["median_ratio"]
        cells = " | ".join(f"{med[f]:.2f}" if f in med else "-" for f in fams)
        pair = f"{med[a] / med[b]:.2f}" if a in med and b in med else "-"
        lines.append(f"| {r['session']} | {r['n']} | {cells} | {pair} |")
    q = res["pair_ratios"]
    if q:
        lines += ["", f"{a} / {b} over {len(q)} sessions: {min(q):.2f}-{max(q):.2f}, "
                  f"median {statistics.median(q):.2f}."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--set", default="heldout", help="validation set name (default heldout)")
    p.add_argument("--batch", type=int, default=1, help="batch (default 1)")
    p.add_argument("--pair", nargs=2, default=["nb201", "ofa"], metavar=("A", "B"),
                   help="two families whose medians are compared (default nb201 ofa)")  # fmt: skip
    p.add_argument("--out", type=Path, required=True, help="record path, without suffix")
    args = p.parse_args(argv)
    prov = provenance_start("experiments/family_bias.py", argv)
    paths = sorted(RESULTS.rglob(f"validation_cpu_{args.set}_b{args.batch}.json"))
    if not paths:
        p.error(f"--set={args.set!r} --batch={args.batch}: no recorded validation under {RESULTS}")
    rows = [session_row(path) for path in paths]
    a, b = args.pair
    pair = [r["median_ratio"][a] / r["median_ratio"][b] for r in rows
            if a in r["median_ratio"] and b in r["median_ratio"]]  # fmt: skip
    fams = sorted({f for r in rows for f in r["median_ratio"]})
    res = {"set": args.set, "batch": args.batch, "pair": [a, b], "families": fams,
           "rows": rows, "pair_ratios": pair}  # fmt: skip
    for line in to_markdown(res, [])[1:].splitlines()[-len(rows) - 3 :]:
        print(line)
    print(f"wrote {write_record(args.out, provenance_finish(prov), res, to_markdown)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
