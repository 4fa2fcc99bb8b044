"""Calibration's single-kernel benchmarks with their input freshly written, as the layer
before leaves it in a network: timed beside the shipped protocol, then refitted on
recorded CPU calibrations, predicting their sessions' development sets.

On a CPU calibration times each benchmark among 31 others (``measure_in_context``), so
its input was last touched 31 calls earlier, while in a network the layer before has just
written it. Here every benchmark of calibration's seeded sweep is timed both ways in one
interleaved run, alternate passes over the same shuffled groups: "cold" as calibration
times it, "hot" right after an untimed in-place multiply of its input by one, which leaves
the input in cache and dirty as a producer would. Variant "shipped" fits the benchmark
times as the sessions recorded them (cold, as calibration times them), "hot inputs"
scales each by its hot / cold ratio, "hot conv inputs" only those of conv and linear
classes (the streaming classes are priced mostly by calibration's op chains), "hot conv
inputs + columns" also charges PyTorch's im2col column buffer to its native k x k convs
(``im2col_l2_ablation.columns_charged``). Everything else is fitted exactly as
``hw_profiles calibrate`` fits. The ratios are timed where this runs, once, and stand in
for every calibration given: they must share its sweep (every recorded CPU calibration
of one torch version does) and have been timed cold.

    python experiments/hot_inputs_ablation.py \\
        --calibration experiments/results/xeon_2026-12-03_d \\
        --out experiments/results/xeon_2026-12-03_d/hot_inputs_ablation

Each calibration's own validations are predicted, of the development sets only
(``--sets``): sets kept for reports are not predicted.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _provenance import provenance_finish, provenance_start, write_record  # noqa: E402
from im2col_l2_ablation import (  # noqa: E402
    Variant,
    ablation_parser,
    columns_charged,
    development_table,
    refit_all,
)

from costmodel._bench import CALIBRATION_SEED, layer_call_and_input  # noqa: E402
from costmodel._calibrate import spec_from_dict  # noqa: E402
from costmodel._kinds import latency_class  # noqa: E402
from costmodel._measure import KERNEL_QUANTILE, clock_cost_s, context_groups, lower_quantile  # noqa: E402
from costmodel._spec import LayerSpec  # noqa: E402
from hw_profiles import HardwareProfile  # noqa: E402

TITLE = "Benchmarks with hot inputs, refitted"
# Classes whose benchmarks only the single-kernel sweep prices (no op chain of them).
CONV_CLASSES = frozenset({"dense_conv", "pointwise_conv", "group_conv", "depthwise_conv",
                          "native_conv", "linear"})  # fmt: skip
# The classes whose fitted terms the record reports: the conv classes the ratios move most
# and the streaming ones the op chains price.
TERM_CLASSES = ("native_conv", "pointwise_conv", "dense_conv", "elementwise", "activation")


def time_cold_and_hot(
    specs: Sequence[LayerSpec],
    *,
    group: int = 32,
    passes: int = 60,
    passes_per_visit: int = 5,
    seed: int = CALIBRATION_SEED,
    now: Callable[[], float] = time.thread_time,
) -> tuple[list[float], list[float]]:
    """Seconds per call of each benchmark (cold, hot): ``measure_in_context``'s groups and
    quantile, each visit alternating a cold pass and a hot one (input written just before,
    untimed), so both see the machine in the same states."""
    calls, primes = [], []
    for spec in specs:
        call, x = layer_call_and_input(spec, "cpu")
        calls.append(call)
        primes.append(lambda x=x: x.mul_(1.0))
    groups = context_groups(len(calls), group, seed)
    clock_s = clock_cost_s(now)
    for fn in calls:  # warm-up, as measure_in_context
        fn()
        fn()
    cold: list[list[float]] = [[] for _ in calls]
    hot: list[list[float]] = [[] for _ in calls]
    for _ in range(math.ceil(passes / passes_per_visit)):
        for idx in groups:
            for p in range(2 * passes_per_visit):
                for i in idx:
                    if p % 2:
                        primes[i]()
                    a = now()
                    calls[i]()
                    (hot if p % 2 else cold)[i].append(now() - a - clock_s)

    def stat(samples: list[float]) -> float:
        return max(lower_quantile(samples, KERNEL_QUANTILE), 1e-8)

    return [stat(s) for s in cold], [stat(s) for s in hot]


def _key(spec: dict[str, Any]) -> str:
    return json.dumps(spec, sort_keys=True)


def scaled_by(ratios: dict[str, float], classes: frozenset[str] | None = None
              ) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:  # fmt: skip
    """Recorded benchmark records with each time scaled by its spec's ratio (only those of
    ``classes`` when given); a spec without a ratio stops the script."""

    def scale(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for r in records:
            key = _key(r["spec"])
            if key not in ratios:
                raise SystemExit(f"benchmark {r['spec']} was not timed here: another sweep?")
            keep = classes is not None and latency_class(spec_from_dict(r["spec"])) not in classes
            out.append({**r, "time_s": r["time_s"] * (1.0 if keep else ratios[key])})
        return out

    return scale


def fitted_terms(hw: HardwareProfile) -> dict[str, float]:
    """What each refit makes of the conv classes and the streaming ones."""
    eager = hw.runtime("eager")
    terms = {}
    for cls in TERM_CLASSES:
        ce, me = hw.efficiency(cls, "fp32")
        terms[f"{cls}_compute_efficiency"], terms[f"{cls}_memory_efficiency"] = ce, me
        terms[f"{cls}_host_s"] = eager.class_host_overhead_s.get(cls, float("nan"))
    return terms


def ratio_table(res: dict[str, Any]) -> list[str]:
    by_class: dict[str, list[float]] = {}
    for b in res["benchmarks"]:
        by_class.setdefault(b["class"], []).append(b["hot_s"] / b["cold_s"])
    lines = ["## Hot / cold per kernel class", "", "Timed by the command above, or read from "
             "the record its `--timings` names.", "", "| class | n | median | min | max |",
             "|---|---|---|---|---|"]  # fmt: skip
    for cls, r in sorted(by_class.items()):
        lines.append(f"| {cls} | {len(r)} | {statistics.median(r):.3f} | {min(r):.3f} | "
                     f"{max(r):.3f} |")  # fmt: skip
    return lines


def to_markdown(res: dict[str, Any], header: list[str]) -> str:
    lines = [f"# {TITLE}", "", *header, "", __doc__.split("\n\n")[1].replace("\n", " "), "",
             *ratio_table(res), "", "## What the fits make of it", "",
             "Each class: compute / memory efficiency / host us per call.", "",
             "| calibration | variant | " + " | ".join(TERM_CLASSES) + " |",
             "|---|---|" + "---|" * len(TERM_CLASSES)]  # fmt: skip
    for cal, by_variant in res["terms"].items():
        for v, t in by_variant.items():
            cells = [f"{t[f'{c}_compute_efficiency']:.2f} / {t[f'{c}_memory_efficiency']:.2f} / "
                     f"{t[f'{c}_host_s'] * 1e6:.1f}" for c in TERM_CLASSES]  # fmt: skip
            lines.append(f"| {cal} | {v} | " + " | ".join(cells) + " |")
    return "\n".join([*lines, *development_table(res)]) + "\n"


def hot_timed(calibrations: Sequence[Path]) -> bool:
    """Whether the calibrations timed their conv / linear benchmarks with hot inputs (a
    protocol tried in one session, whose raw record lists the classes); all alike."""
    kinds = {
        bool(json.loads((f / "calibration_cpu_raw.json").read_text()).get("hot_input_classes"))
        for f in calibrations
    }
    if len(kinds) > 1:
        raise SystemExit("give calibrations timed alike: some with hot inputs, some cold")
    return kinds.pop()


def timed_benchmarks(calibrations: Sequence[Path], timings: Path | None) -> list[dict[str, Any]]:
    """Every benchmark of the first calibration's sweep with its cold and hot times: timed
    here, or read from ``timings`` (an earlier record of this script)."""
    if timings is not None:
        return json.loads(timings.read_text())["benchmarks"]
    raw = json.loads((calibrations[0] / "calibration_cpu_raw.json").read_text())
    specs = [spec_from_dict(b["spec"]) for b in raw["benchmarks"]]
    torch.manual_seed(CALIBRATION_SEED)
    torch.set_num_threads(1)
    with torch.inference_mode():
        cold, hot = time_cold_and_hot(specs)
    print(f"timed {len(specs)} benchmarks cold and hot", flush=True)
    return [
        {"spec": b["spec"], "class": latency_class(sp, "pytorch_cpu"), "cold_s": c, "hot_s": h}
        for b, sp, c, h in zip(raw["benchmarks"], specs, cold, hot, strict=True)
    ]


def variants_for(benches: list[dict[str, Any]], hot: bool) -> dict[str, Variant]:
    """The variants for cold-timed calibrations, or for hot-timed ones: as recorded, and
    their conv / linear benchmarks scaled back to cold."""
    ratios = {_key(b["spec"]): b["hot_s"] / b["cold_s"] for b in benches}
    if hot:
        back = {k: 1 / r for k, r in ratios.items()}
        cold_convs = scaled_by(back, CONV_CLASSES)
        return {"hot conv inputs (recorded)": Variant({}),
                "cold conv inputs": Variant({}, benchmarks=cold_convs)}  # fmt: skip
    hot_convs = scaled_by(ratios, CONV_CLASSES)
    return {
        "shipped": Variant({}),
        "hot inputs": Variant({}, benchmarks=scaled_by(ratios)),
        "hot conv inputs": Variant({}, benchmarks=hot_convs),
        "hot conv inputs + columns": Variant({}, columns_charged, benchmarks=hot_convs),
    }


def main(argv: list[str] | None = None) -> int:
    parser = ablation_parser(__doc__)
    parser.add_argument("--timings", type=Path,
                        help="take the cold and hot times from an earlier record of this "
                        "script (its .json) instead of timing them")  # fmt: skip
    args = parser.parse_args(argv)
    script = "experiments/hot_inputs_ablation.py"
    prov = provenance_start(script, argv)
    benches = timed_benchmarks(args.calibration, args.timings)
    variants = variants_for(benches, hot_timed(args.calibration))
    res = {"benchmarks": benches, **refit_all(args, variants, script, terms_of=fitted_terms)}
    print(f"wrote {write_record(args.out, provenance_finish(prov), res, to_markdown)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
