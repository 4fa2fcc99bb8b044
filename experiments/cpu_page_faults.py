"""Fresh pages per forward pass on this CPU: counted by the OS, and as the cost model says.

For every network of the network lists at batch 1 and 32, each in a fresh process with
glibc fixed at the steady state validation measures in (``steady_state_allocator``): two
warm passes, then the minor page faults (``getrusage``) of each of eight more, times the
page size; the median pass. Beside it:

- 'heap model': ``costmodel._allocator.fresh_bytes`` on the network's specs (glibc's
  heap with best fit, trim at 64 MiB, mappings from 32 MiB; oneDNN convs' reorder
  temporaries);
- 'outputs > 32 MiB': the rule the cost model had before, an output above the mmap
  threshold and nothing else.

A process per network: the heap a network leaves behind changes what the next one
faults, and the model describes a process that runs one network. Nothing is timed, so
the load on the machine does not move these counts. The FBNet networks of the
unseen-families list chose the heap model (its reorder temporaries and allocation
order); the other lists check it.

    python experiments/cpu_page_faults.py
    python experiments/cpu_page_faults.py --lists heldout --batches 32 --out /tmp/pf
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _provenance import provenance_finish, provenance_start, write_record  # noqa: E402

LISTS = {
    "unseen": ROOT / "experiments" / "unseen_families.txt",
    "heldout": ROOT / "experiments" / "heldout_networks.txt",
    "dev": ROOT / "experiments" / "dev_networks_2026-11-30.txt",
    "classics": ROOT / "experiments" / "cifar_classics.txt",
}
DEFAULT_OUT = ROOT / "experiments" / "results" / "cpu_page_faults"
WARM_PASSES, COUNTED_PASSES = 2, 8
MIB = 2**20
# Counted and modelled agree when within 10% or 1 MiB (one stray buffer of a small network).
AGREE_SHARE, AGREE_BYTES = 0.10, MIB


def count_faults(list_name: str, batch: int, index: int) -> dict[str, Any]:
    """In this process: fresh bytes per pass of one network, counted and modelled."""
    import torch

    from costmodel._cli import read_networks
    from costmodel._formulas import count
    from costmodel._latency import network_fresh_bytes
    from costmodel._measure import steady_state_allocator
    from costmodel._report import layer_mac_bytes
    from hw_profiles import load

    steady_state_allocator()
    torch.set_num_threads(1)
    hw = load(ROOT / "experiments" / "results" / "calibrated_cpu.toml")
    net = read_networks(LISTS[list_name])[index]
    specs = list(net.lower(batch))
    counts = [count(s) for s in specs]
    layers = [(s, c, layer_mac_bytes(c, "fp32")) for s, c in zip(specs, counts, strict=True)]
    fresh = network_fresh_bytes(layers, hw, "fp32")
    model = net.build().eval()
    x = torch.randn(batch, *net.input_shape)
    passes = []
    with torch.inference_mode():
        for k in range(WARM_PASSES + COUNTED_PASSES):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            model(x)
            if k >= WARM_PASSES:
                passes.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
                              * resource.getpagesize())  # fmt: skip
    return {
        "arch": str(net),
        "counted_bytes": statistics.median(passes),
        "counted_passes_bytes": passes,
        "heap_model_bytes": sum(f.total for f in fresh),
        "heap_model_mapped_bytes": sum(f.mapped for f in fresh),
        "outputs_over_threshold_bytes": sum(
            4 * c.output_elements for c in counts
            if not c.alias and 4 * c.output_elements > hw.mmap_threshold_bytes
        ),
    }  # fmt: skip


def _agrees(model: float, counted: float) -> bool:
    return abs(model - counted) <= max(AGREE_SHARE * counted, AGREE_BYTES)


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "n": len(rows),
        "faulting": sum(r["counted_bytes"] > AGREE_BYTES for r in rows),
    }
    for key in ("heap_model_bytes", "outputs_over_threshold_bytes"):
        out[key] = {
            "agree": sum(_agrees(r[key], r["counted_bytes"]) for r in rows),
            "median_abs_error_mib": statistics.median(
                abs(r[key] - r["counted_bytes"]) / MIB for r in rows),
            "total_model_mib": sum(r[key] for r in rows) / MIB,
        }  # fmt: skip
    out["total_counted_mib"] = sum(r["counted_bytes"] for r in rows) / MIB
    return out


def to_markdown(res: dict[str, Any], header: list[str]) -> str:
    lines = ["# Fresh pages per forward pass on a CPU: counted and modelled", "", *header, "",
             "Clock: none; nothing is timed, the OS counts page faults.", "",
             "\n\n".join(__doc__.split("\n\n")[1:4]), "",
             f"Agree: within {AGREE_SHARE:.0%} or {AGREE_BYTES // MIB} MiB of the count. "
             "'faulting': networks that fault more than 1 MiB per pass.", "",
             "| list | batch | n | faulting | counted MiB (all) | heap model: agree | "
             "median abs error MiB | MiB (all) | outputs > 32 MiB: agree | "
             "median abs error MiB | MiB (all) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for cell in res["cells"]:
        s = cell["summary"]
        h, o = s["heap_model_bytes"], s["outputs_over_threshold_bytes"]
        lines.append(
            f"| {cell['list']} | {cell['batch']} | {s['n']} | {s['faulting']} | "
            f"{s['total_counted_mib']:.0f} | {h['agree']}/{s['n']} | "
            f"{h['median_abs_error_mib']:.1f} | {h['total_model_mib']:.0f} | "
            f"{o['agree']}/{s['n']} | {o['median_abs_error_mib']:.1f} | "
            f"{o['total_model_mib']:.0f} |"
        )
    lines += ["", "Networks that fault (counted or modelled) more than 1 MiB per pass "
              "(MiB per pass: counted / heap model / outputs > 32 MiB):", ""]  # fmt: skip
    for cell in res["cells"]:
        for r in cell["rows"]:
            vals = (r["counted_bytes"], r["heap_model_bytes"], r["outputs_over_threshold_bytes"])
            if max(vals) > AGREE_BYTES:
                name = r["arch"] if len(r["arch"]) < 70 else r["arch"][:67] + "..."
                lines.append(f"- {cell['list']} b{cell['batch']}: `{name}`: "
                             + " / ".join(f"{v / MIB:.1f}" for v in vals))  # fmt: skip
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lists", nargs="+", choices=sorted(LISTS), default=list(LISTS))
    p.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output path without suffix")
    p.add_argument("--worker", nargs=3, metavar=("LIST", "BATCH", "INDEX"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:  # one network in a fresh process: its own heap
        name, batch, index = args.worker
        print(json.dumps(count_faults(name, int(batch), int(index))))
        return 0
    from costmodel._cli import read_networks

    prov = provenance_start("experiments/cpu_page_faults.py", argv)
    cells = []
    for name in args.lists:
        n = len(read_networks(LISTS[name]))
        for batch in args.batches:
            rows = [json.loads(subprocess.run(
                [sys.executable, __file__, "--worker", name, str(batch), str(i)],
                check=True, capture_output=True, text=True).stdout) for i in range(n)]  # fmt: skip
            cells.append({"list": name, "batch": batch, "rows": rows,
                          "summary": summarize(rows)})  # fmt: skip
            print(name, batch, cells[-1]["summary"], flush=True)
    res = {"cells": cells}
    print(f"wrote {write_record(args.out, provenance_finish(prov), res, to_markdown)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
