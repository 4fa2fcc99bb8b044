"""The experiment scripts imported as modules, so that tests can call their functions."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from costmodel import import_file

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def load_script(name: str) -> ModuleType:
    """``experiments/<name>.py``, imported once per process (in ``sys.modules``, where
    dataclasses look their module up) with its folder on ``sys.path`` while it runs, as
    ``python experiments/<name>.py`` would have it for ``_provenance`` and its siblings."""
    return import_file(EXPERIMENTS / f"{name}.py", prefix="roofnas_experiment_")
