"""The experiment scripts imported as modules, so that tests can call their functions."""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

import pytest

from costmodel import import_file

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def load_script(name: str) -> ModuleType:
    """``experiments/<name>.py``, imported once per process (in ``sys.modules``, where
    dataclasses look their module up) with its folder on ``sys.path`` while it runs, as
    ``python experiments/<name>.py`` would have it for ``_provenance`` and its siblings."""
    return import_file(EXPERIMENTS / f"{name}.py", prefix="roofnas_experiment_")


# The recorded fits these tests regenerate (the Xeon calibrations, the EPYC rescale table)
# come out to the last digit on OpenBLAS's SkylakeX kernels, which it runs on AVX-512 CPUs
# it knows. The fit stops where its trust-region steps, run through BLAS, become tiny, so
# other kernels (Haswell's, on a CPU OpenBLAS does not know) stop it a little elsewhere.
RECORD_BLAS_CORE = "SkylakeX"
_SKYLAKEX_FLAGS = frozenset({"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"})


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (empty where /proc/cpuinfo is not)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return frozenset()
    return next((frozenset(ln.split(":", 1)[1].split()) for ln in lines
                 if ln.startswith("flags")), frozenset())  # fmt: skip


def blas_env(core: str, needs: frozenset[str]) -> dict[str, str]:
    """``os.environ`` for a subprocess whose OpenBLAS runs ``core``'s kernels (numpy reads
    ``OPENBLAS_CORETYPE`` as it loads); the test skips, saying why, where numpy does not use
    OpenBLAS or the CPU lacks a flag in ``needs``."""
    from costmodel._fit import blas_kernels

    if "openblas" not in blas_kernels():
        pytest.skip(f"numpy / scipy do not use OpenBLAS here: {blas_kernels()}")
    missing = sorted(needs - cpu_flags())
    if missing:
        pytest.skip(f"OpenBLAS's {core} kernels need {', '.join(missing)}, which this CPU lacks")
    return {**os.environ, "OPENBLAS_CORETYPE": core}


def record_blas_env() -> dict[str, str]:
    """``blas_env`` for the kernels the recorded fits ran on: a refit elsewhere need not
    match them."""
    return blas_env(RECORD_BLAS_CORE, _SKYLAKEX_FLAGS)
