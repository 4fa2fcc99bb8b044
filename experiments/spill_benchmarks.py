"""Time the spilled benchmarks (``costmodel._bench.spill_sweep``) as calibration times its own.

Calibration's sweep of single kernels stays mostly inside the last-level cache, so a
fit cannot tell how a class slows once its bytes come from DRAM. This times layers of
every class whose working set is 16-128 MiB, each among the others
(``measure_in_context``, 60 passes, calibration's seed and thread setting), and writes
them in the raw calibration record's format, to refit a recorded session with them
(``experiments/cache_model_ablation.py``).

    python experiments/spill_benchmarks.py --out experiments/results/SESSION/spill_benchmarks.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _provenance import provenance_finish, provenance_start  # noqa: E402

from costmodel._bench import CALIBRATION_SEED, layer_call, spill_sweep  # noqa: E402
from costmodel._calibrate import configure_torch, spec_to_dict  # noqa: E402
from costmodel._measure import clock_now, measure_in_context  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="JSON file to write")
    p.add_argument("--passes", type=int, default=60, help="timed passes over all (default 60)")
    args = p.parse_args(argv)
    prov = provenance_start("experiments/spill_benchmarks.py", argv)
    configure_torch("cpu", 1)
    specs = spill_sweep()
    with torch.inference_mode():
        calls = [layer_call(s, "cpu") for s in specs]
        times = measure_in_context(
            calls, passes=args.passes, seed=CALIBRATION_SEED, now=clock_now("wall")
        )
    prov = provenance_finish(prov)
    args.out.write_text(
        json.dumps(
            {
                "provenance": prov.to_dict(),
                "benchmarks": [
                    {"spec": spec_to_dict(sp), "time_s": t}
                    for sp, t in zip(specs, times, strict=True)
                ],
            },
            indent=1,
        )
    )
    print(f"timed {len(specs)} spilled benchmarks -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
