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
# it knows, and not on its Haswell kernels. The fit's trust-region steps run through
# BLAS and it stops where its steps become tiny, so other kernels (Haswell, which OpenBLAS
# picks on CPUs it does not know) stop it a little elsewhere: a refit regenerates those
# records to the last digit only on the same kernels.
RECORD_BLAS_CORE = "SkylakeX"
_RECORD_CORE_FLAGS = frozenset({"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"})


def record_blas_env() -> dict[str, str]:
    """``os.environ`` for a subprocess whose OpenBLAS runs the records' kernels; the test
    skips, saying why, on a CPU that cannot run them."""
    try:
        flags = next(
            set(line.split(":", 1)[1].split())
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("flags")
        )
    except (OSError, StopIteration):
        flags = set()
    missing = sorted(_RECORD_CORE_FLAGS - flags)
    if missing:
        pytest.skip(
            f"the recorded fits ran on OpenBLAS's {RECORD_BLAS_CORE} kernels, which this CPU "
            f"cannot run (no {', '.join(missing)}): a refit here need not match them"
        )
    return {**os.environ, "OPENBLAS_CORETYPE": RECORD_BLAS_CORE}
