"""A recorded CPU calibration refitted with the heap model of fresh pages, its validations
predicted again.

``costmodel._allocator`` now decides which bytes a CPU forward pass writes on fresh
pages (glibc's heap trimmed past 64 MiB, mappings from 32 MiB, oneDNN's reorder
temporaries); before, only an output above 32 MiB counted. This refits one session's
recorded calibration timings (``calibrate --raw``) with the current cost model, exactly
as ``hw_profiles calibrate`` fits them, and predicts every validation the same session
recorded (``validation_cpu_*.json``) from its recorded times. Nothing is timed, so the
differences are the model's alone. 'recorded': the predictions written at the time
(the profile fitted with the old rule, predicting with it).

The recorded calibration networks carry no layer names: they are drawn again
(``searchspace.sample_architectures``, calibration's seed and space) and each must
lower to exactly the recorded layers, or the script stops.

    python experiments/allocator_refit.py experiments/results/epyc_2026-12-02
    python experiments/allocator_refit.py experiments/results/epyc_2026-12-02 --hold fault

``--hold fault`` keeps the fresh-page cost calibration probed (a 64 MiB ReLU against a
16 MiB one) instead of fitting it, a variant tried on the development sets and not adopted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _provenance import provenance_finish, provenance_start, write_record  # noqa: E402

import searchspace  # noqa: E402
from costmodel import _calibrate as C  # noqa: E402
from costmodel import estimate  # noqa: E402
from costmodel._bench import CALIBRATION_SEED  # noqa: E402
from costmodel._ceilings import Ceilings  # noqa: E402
from costmodel._cli import parse_network  # noqa: E402
from costmodel._fit import NetworkRow, fit_profile  # noqa: E402
from costmodel._spec import LayerSpec  # noqa: E402
from hw_profiles import HardwareProfile  # noqa: E402

SPACE = "cifar"  # what the recorded sessions calibrated on (session.log says so)
# Which sets guided the heap model: its FBNet networks chose it.
ROLE = {"heldout": "held out", "unseen_families": "development (FBNet chose the model)",
        "devlist": "development"}  # fmt: skip


def calibration_networks(raw: dict[str, Any]) -> list[NetworkRow]:
    """The recorded calibration networks, with the names and inputs lowering gives them."""
    n = len(raw["networks"])
    archs = searchspace.sample_architectures(SPACE, n, CALIBRATION_SEED)
    batches = C.NETWORK_BATCHES
    order = [(b, a) for b in sorted(set(batches))
             for i, a in enumerate(archs) if batches[i % len(batches)] == b]  # fmt: skip
    rows = []
    for k, ((b, arch), rec) in enumerate(zip(order, raw["networks"], strict=True)):
        specs = tuple(arch.lower(b))
        if specs != tuple(C.spec_from_dict(s) for s in rec["layers"]):
            raise SystemExit(f"calibration network {k} ({arch}, batch {b}) does not lower to "
                             "the recorded layers: another space or seed?")  # fmt: skip
        rows.append((specs, rec["time_s"]))
    return rows


def refit(
    folder: Path,
    hold: tuple[str, ...] = (),
    cache_model: str = "blend",
    extra_benchmarks: Sequence[dict[str, Any]] = (),
    leave_out: Collection[LayerSpec] = (),
    ceilings: Mapping[str, float] | None = None,
    benchmarks: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None,
) -> HardwareProfile:
    """The session's recorded calibration fitted again with the current model; optionally
    with another ``cache_model``, more benchmarks (raw records: spec, time_s), without
    the recorded benchmarks of the layers in ``leave_out``, with recorded ceilings
    replaced by ``ceilings`` (``costmodel._ceilings.Ceilings`` field names) and the
    recorded benchmark records passed through ``benchmarks`` first."""
    raw = json.loads((folder / "calibration_cpu_raw.json").read_text())
    raw["ceilings"].update(ceilings or {})
    recorded = benchmarks(raw["benchmarks"]) if benchmarks else raw["benchmarks"]
    pairs = [(C.spec_from_dict(b["spec"]), b["time_s"]) for b in [*recorded, *extra_benchmarks]]
    specs = [sp for sp, _ in pairs if sp not in leave_out]
    times = [t for sp, t in pairs if sp not in leave_out]
    chains = [(tuple(C.spec_from_dict(s) for s in c["layers"]), c["time_s"])
              for c in raw.get("op_chains", [])]  # fmt: skip
    base = C._base_profile("cpu", 1, None, "refit", Ceilings(**raw["ceilings"]),
                           raw["overheads_s"])  # fmt: skip
    base = dataclasses.replace(base, cache_model=cache_model)
    fit = fit_profile(base, specs, times, nets=[*calibration_networks(raw), *chains], hold=hold)
    return C._with_graph_class_costs(fit.profile)


def _scores(pred: np.ndarray, meas: np.ndarray) -> dict[str, float]:
    err = np.abs(pred / meas - 1)
    return {"spearman": float(spearmanr(pred, meas).statistic),
            "median_abs_error": float(np.median(err)),
            "within_10": float(np.mean(err <= 0.10)),
            "median_ratio": float(np.median(pred / meas))}  # fmt: skip


def repredict(folder: Path, hw: HardwareProfile) -> list[dict[str, Any]]:
    cells = []
    for path in sorted(folder.glob("validation_cpu_*_b*.json")):
        doc = json.loads(path.read_text())
        stem = path.stem.removeprefix("validation_cpu_")
        name, batch = stem.rsplit("_b", 1)
        pts = doc["points"]
        meas = np.array([p["measured_median_s"] for p in pts])
        old = np.array([p["predicted_s"] for p in pts])
        new = np.array([estimate(parse_network(p["arch"], ROOT / "experiments"), hw=hw,
                                 batch=int(batch)).total.latency_s for p in pts])  # fmt: skip
        cells.append(
            {
                "set": name,
                "batch": int(batch),
                "n": len(pts),
                "role": ROLE.get(name, "-"),
                "recorded": _scores(old, meas),
                "heap_model": _scores(new, meas),
                "per_network": [
                    {
                        "arch": p["arch"],
                        "measured_s": float(m),
                        "recorded_s": float(o),
                        "heap_model_s": float(n),
                    }
                    for p, m, o, n in zip(pts, meas, old, new, strict=True)
                ],
            }
        )
        print(name, batch, cells[-1]["recorded"], cells[-1]["heap_model"], flush=True)
    return cells


def to_markdown(res: dict[str, Any], header: list[str]) -> str:
    held = f" (held at the probe: {', '.join(res['hold'])})" if res.get("hold") else ""
    lines = [f"# {res['folder']}: refitted with the heap model of fresh pages{held}", "", *header,
             "", __doc__.split("\n\n")[1].replace("\n", " "), "",
             "Measured: the median of the recorded samples (wall clock, as a user times). "
             "Spearman / median absolute error / share within 10% / median predicted over "
             "measured.", "",
             "| set | role | batch | n | recorded rho | MdAPE | +-10% | ratio | "
             "heap model rho | MdAPE | +-10% | ratio |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for c in res["cells"]:
        cols = []
        for key in ("recorded", "heap_model"):
            s = c[key]
            cols += [
                f"{s['spearman']:.3f}",
                f"{s['median_abs_error']:.1%}",
                f"{s['within_10']:.0%}",
                f"{s['median_ratio']:.2f}",
            ]
        lines.append(
            f"| {c['set']} | {c['role']} | {c['batch']} | {c['n']} | " + " | ".join(cols) + " |"
        )
    p = res["profile"]
    lines += ["", f"Refitted fresh-page cost: {p['page_fault_s_per_byte'] * 1e9:.3f} ns/B "
              f"(recorded profile: {res['recorded_page_fault_s_per_byte'] * 1e9:.3f} ns/B); "
              f"the refitted profile is `{res['profile_path']}`."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "folder",
        type=Path,
        help="holds calibration_cpu_raw.json, "
        "calibrated_cpu.toml and validation_cpu_*.json from one session",
    )
    p.add_argument(
        "--hold",
        nargs="*",
        default=[],
        choices=["fault"],
        help="fit parameters kept at the probed value",
    )
    args = p.parse_args(argv)
    prov = provenance_start("experiments/allocator_refit.py", argv)
    hw = refit(args.folder, tuple(args.hold))
    suffix = "".join(f"_hold_{h}" for h in args.hold)
    out_toml = args.folder / f"calibrated_cpu_heap_model{suffix}.toml"
    from hw_profiles import load
    from hw_profiles._toml import profile_to_toml

    out_toml.write_text(
        profile_to_toml(
            hw,
            {"method": "calibration_cpu_raw.json refitted with the heap model (nothing timed)"},
            "Written by experiments/allocator_refit.py.",
        )
    )
    load(out_toml)  # the file must load
    recorded = load(args.folder / "calibrated_cpu.toml")
    res = {"folder": str(args.folder.relative_to(ROOT) if args.folder.is_absolute()
                         else args.folder), "hold": args.hold,
           "profile_path": str(out_toml.name), "profile": hw.to_dict(),
           "recorded_page_fault_s_per_byte": recorded.page_fault_s_per_byte,
           "cells": repredict(args.folder, hw)}  # fmt: skip
    out = args.folder / f"allocator_refit{suffix}"
    print(f"wrote {write_record(out, provenance_finish(prov), res, to_markdown)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
