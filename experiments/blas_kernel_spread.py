"""How far a calibration's fit moves with the BLAS kernels it runs on: recorded CPU
calibrations refitted under each OpenBLAS kernel set, their development sets predicted.

Calibration fits about 40 parameters by least squares (``costmodel._fit.fit_profile``:
scipy's trust-region solver, finite-difference Jacobians, a model with kinks where a
kernel turns from memory- to compute-bound). Its steps run through BLAS, and OpenBLAS picks
its kernels by CPU: SkylakeX on AVX-512 CPUs it knows (the recorded Xeon fits come out
bit for bit on them), Haswell on a CPU it does not know (a Zen 5 VM). Kernels round
differently, and the solver stops where its steps become tiny, so the same timings can fit
to parameters a little apart. Here each calibration is refitted under each kernel set given
(``--core``, a subprocess each with ``OPENBLAS_CORETYPE``, which numpy and scipy read as
they load), the recorded profile beside them; each profile predicts the calibration's own
validations of the development sets (``--sets``). Nothing is timed.

    python experiments/blas_kernel_spread.py \\
        --calibration experiments/results/xeon_2026-12-03_d \\
        --core SkylakeX --core Haswell \\
        --out experiments/results/xeon_2026-12-03_d/blas_kernel_spread

A kernel set the CPU cannot run (SkylakeX needs AVX-512) crashes its subprocess; run where
every set given can run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _provenance import provenance_finish, provenance_start, write_record  # noqa: E402
from allocator_refit import refit  # noqa: E402
from cache_model_ablation import _reference_s, _row, predict_session  # noqa: E402
from im2col_l2_ablation import DEFAULT_SETS, ablation_parser  # noqa: E402

from costmodel import _fit  # noqa: E402
from hw_profiles import KERNEL_CLASSES, HardwareProfile, load  # noqa: E402
from hw_profiles._toml import profile_to_toml  # noqa: E402

SCRIPT = "experiments/blas_kernel_spread.py"
TITLE = "The calibration fit under other BLAS kernels"
RECORDED = "recorded"


def refit_here(folder: Path, out: Path) -> dict[str, Any]:
    """``folder``'s calibration refitted in this process, written to ``out``; the kernels it
    ran on and where the solver stopped on all the data (the fit's last solve)."""
    solves = []
    solver = _fit.least_squares

    def recording(*args: Any, **kwargs: Any) -> Any:
        r = solver(*args, **kwargs)
        solves.append({"status": int(r.status), "cost": float(r.cost),
                       "optimality": float(r.optimality), "nfev": int(r.nfev)})  # fmt: skip
        return r

    _fit.least_squares = recording
    try:
        hw = refit(folder)
    finally:
        _fit.least_squares = solver
    blas = _fit.blas_kernels()
    header = f"Written by {SCRIPT}: {folder.name} refitted on {blas}."
    out.write_text(profile_to_toml(hw, {"method": f"refit on {blas}"}, header))
    return {"blas": blas, "solve": solves[-1]}


def refit_on(core: str, folder: Path, out: Path) -> dict[str, Any]:
    """``refit_here`` in a subprocess whose OpenBLAS runs ``core``'s kernels."""
    env = {**os.environ, "OPENBLAS_CORETYPE": core, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, __file__, "--refit-one", str(folder), str(out)],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"refit of {folder} on {core} kernels exited {proc.returncode}:\n"
                         f"{proc.stderr[-2000:]}")  # fmt: skip
    run = json.loads(proc.stdout.splitlines()[-1])
    if any(f"({core} kernels)" not in lib for lib in run["blas"].split(", ")):
        raise SystemExit(f"OPENBLAS_CORETYPE={core} was not taken: {run['blas']}")
    return run


def parameters(hw: HardwareProfile) -> dict[str, float]:
    """The fitted parameters, by name: efficiencies and host cost per class, cache terms."""
    out = {"cache_bytes": float(hw.cache_bytes), "cache_falloff": hw.cache_falloff_exponent}
    eager = hw.runtime("eager")
    for cls in KERNEL_CLASSES:
        ce, me = hw.efficiency(cls, "fp32")
        out[f"ce:{cls}"], out[f"me:{cls}"] = ce, me
        out[f"host:{cls}"] = eager.class_host_overhead_s.get(cls, float("nan"))
    return out


def spread(a: dict[str, float], b: dict[str, float]) -> list[tuple[str, float]]:
    """Each parameter's relative difference |b / a - 1|, largest first (both finite and a
    nonzero only)."""
    moved = [(k, abs(b[k] / a[k] - 1)) for k in a if a[k] == a[k] and b[k] == b[k] and a[k]]
    return sorted(moved, key=lambda kv: -kv[1])


def one_calibration(folder: Path, cores: Sequence[str], prof_dir: Path,
                    sets: Sequence[str]) -> dict[str, Any]:  # fmt: skip
    """Every kernel set's refit of ``folder`` and the development sets predicted."""
    paths = {core: prof_dir / f"{folder.name}_{core}.toml" for core in cores}
    with ThreadPoolExecutor(max_workers=len(cores)) as pool:  # the refits share nothing
        runs = dict(zip(cores, pool.map(lambda c: refit_on(c, folder, paths[c]), cores),
                        strict=True))  # fmt: skip
    profiles = {
        RECORDED: str(folder / "calibrated_cpu.toml"),
        **{c: str(p) for c, p in paths.items()},
    }
    params = {name: parameters(load(p)) for name, p in profiles.items()}
    pairs = {f"{a} / {b}": spread(params[a], params[b])
             for i, a in enumerate(profiles) for b in list(profiles)[i + 1:]}  # fmt: skip
    cells = predict_session(folder, profiles, _reference_s(folder / "calibrated_cpu.toml"), sets)
    for c in cells:
        c["calibration"] = folder.name
        print(_row(c, list(profiles)), flush=True)
    return {"runs": runs, "spread": pairs, "cells": cells, "variants": list(profiles)}


def _share(d: float) -> str:
    """A relative difference as a percentage, or exactly 0 (bit-identical parameters)."""
    return "0" if d == 0 else f"{d:.1e}" if d < 1e-4 else f"{d:.2%}"


def _table(title: str, text: str, columns: Sequence[str], rows: Iterable[str]) -> list[str]:
    """A report section: its title, what it shows, then the table."""
    head = f"| {' | '.join(columns)} |"
    return [f"## {title}", "", text, "", head, "|" + "---|" * len(columns), *rows]


def _solver_row(cal: str, core: str, s: dict[str, Any]) -> str:
    return (f"| {cal} | {core} | {s['status']} | {s['cost']:.4f} | {s['optimality']:.3g} | "
            f"{s['nfev']} |")  # fmt: skip


def _solver_table(res: dict[str, Any]) -> list[str]:
    rows = (_solver_row(cal, core, run["solve"]) for cal, r in res["calibrations"].items()
            for core, run in r["runs"].items())  # fmt: skip
    text = ("The last solve (all benchmarks, networks and chains) per kernel set: scipy's status "
            "(3: steps below xtol), the cost (soft-L1 of log-time residuals) and the first-order "
            "optimality (0 at a stationary point).")  # fmt: skip
    columns = ["calibration", "OpenBLAS kernels", "status", "cost", "optimality", "evaluations"]
    return _table("Where the solver stopped", text, columns, rows)


def _spread_row(cal: str, pair: str, moved: list[tuple[str, float]]) -> str:
    values = sorted(d for _, d in moved)
    top = ", ".join(f"{k} {_share(d)}" for k, d in moved[:3] if d)
    return (f"| {cal} | {pair} | {_share(values[len(values) // 2])} | {_share(values[-1])} | "
            f"{top or '-'} |")  # fmt: skip


def _spread_table(res: dict[str, Any]) -> list[str]:
    rows = (_spread_row(cal, pair, moved) for cal, r in res["calibrations"].items()
            for pair, moved in r["spread"].items())  # fmt: skip
    text = ("Per pair of profiles: the median and largest relative difference over the fitted "
            "parameters (efficiencies and host cost per class, cache size and fall-off), and "
            "the three that moved most.")  # fmt: skip
    columns = ["calibration", "pair", "median", "largest", "moved most"]
    return _table("How far the parameters moved", text, columns, rows)


def _development_tables(res: dict[str, Any]) -> list[str]:
    lines = ["## Development sets", "",
             "Each cell: Spearman / median absolute error at the calibration's speed (the "
             "unscaled wall-clock error in brackets), per profile. Measured: the median of the "
             "recorded samples.", ""]  # fmt: skip
    for r in res["calibrations"].values():
        names = r["variants"]
        lines += [f"| calibration | session | set | batch | n | speed | {' | '.join(names)} |",
                  "|" + "---|" * (6 + len(names)),
                  *(_row(c, names) for c in r["cells"]), ""]  # fmt: skip
    return lines


def to_markdown(res: dict[str, Any], header: list[str]) -> str:
    intro = __doc__.split("\n\n")[1].replace("\n", " ")
    lines = [f"# {TITLE}", "", *header, "", intro, "", *_solver_table(res), "",
             *_spread_table(res), "", *_development_tables(res)]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--refit-one"]:  # the subprocess: numpy loaded with the kernels asked
        print(json.dumps(refit_here(Path(argv[1]), Path(argv[2]))))
        return 0
    p = ablation_parser(__doc__)
    p.add_argument("--core", action="append",
                   help="an OPENBLAS_CORETYPE to refit on; repeatable (default: SkylakeX, "
                   "Haswell)")  # fmt: skip
    args = p.parse_args(argv)
    cores = args.core or ["SkylakeX", "Haswell"]
    prov = provenance_start(SCRIPT, argv)
    prof_dir = args.out.parent / (args.out.name + "_profiles")
    prof_dir.mkdir(parents=True, exist_ok=True)
    res = {"cores": cores, "calibrations": {
        f.name: one_calibration(f, cores, prof_dir, args.sets or DEFAULT_SETS)
        for f in args.calibration}}  # fmt: skip
    print(f"wrote {write_record(args.out, provenance_finish(prov), res, to_markdown)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
