"""Where a result file comes from: the command, the date, the machine and its load.

Every script that writes experiments/results/ starts its report with
``header_lines(prov)``: the command line as run, the UTC date, the host, CPU
model, core count, Python and torch versions, and the load average before and
after the run (the machine is shared, so a timing means little without it).

    prov = provenance_start("experiments/x.py", argv)   # before any work
    ...
    prov = provenance_finish(prov)                       # after the last timing
    lines = header_lines(prov)

Timed figures use ``wall_stats``: the median of repeated wall-clock runs with
the p10-p90 spread and the lower decile, as a user's repeated runs see them.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from costmodel._ceilings import device_name
from costmodel._fit import blas_kernels
from costmodel._measure import lower_quantile

# How every timed figure of these scripts is stated in their reports.
WALL_CLOCK = "wall clock (time.perf_counter)"
WALL_STATISTIC = "median of the repeated runs, p10-p90 spread beside it"

LoadAverage = tuple[float, float, float]


@dataclass(frozen=True)
class Provenance:
    """The command that made a result file and the machine it ran on."""

    command: str
    date_utc: str
    host: str
    machine: str
    cpu_model: str
    cpu_count: int
    python: str
    torch: str
    loadavg_before: LoadAverage
    loadavg_after: LoadAverage | None = None
    # The BLAS kernels a fit ran on (records older than this field leave it empty).
    blas: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_average() -> LoadAverage:
    """The 1, 5 and 15 minute load averages, rounded (nan where the OS has none)."""
    if not hasattr(os, "getloadavg"):
        return (float("nan"),) * 3
    one, five, fifteen = os.getloadavg()
    return (round(one, 2), round(five, 2), round(fifteen, 2))


def command_line(script: str, argv: Sequence[str] | None = None) -> str:
    """``python SCRIPT ARGS`` as run (``argv`` defaults to this process's arguments)."""
    args = list(sys.argv[1:] if argv is None else argv)
    return shlex.join(["python", script, *args])


def _torch_version() -> str:
    try:
        return version("torch")
    except PackageNotFoundError:
        return "not installed"


def provenance_start(script: str, argv: Sequence[str] | None = None) -> Provenance:
    """The provenance of a run starting now (load average before the work)."""
    return Provenance(
        command=command_line(script, argv),
        date_utc=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        host=platform.node() or "unknown-host",
        machine=platform.machine(),
        cpu_model=device_name("cpu"),
        cpu_count=os.cpu_count() or 0,
        python=platform.python_version(),
        torch=_torch_version(),
        loadavg_before=load_average(),
        blas=blas_kernels(),
    )


def provenance_finish(prov: Provenance) -> Provenance:
    """``prov`` with the load average after the work."""
    return replace(prov, loadavg_after=load_average())


def _load_text(load: Sequence[float] | None) -> str:
    return "-" if load is None else "/".join(f"{x:.2f}" for x in load)


def header_lines(prov: Provenance | dict[str, Any]) -> list[str]:
    """The report's first lines after its title: command, date, machine, load."""
    p = Provenance(**prov) if isinstance(prov, dict) else prov
    blas = f", BLAS {p.blas}" if p.blas else ""
    return [
        f"Command: `{p.command}`",
        "",
        f"Date: {p.date_utc}. Host: {p.host} ({p.machine}, {p.cpu_model}, {p.cpu_count} "
        f"cores); Python {p.python}, torch {p.torch}{blas}. Load average (1/5/15 min): "
        f"{_load_text(p.loadavg_before)} before, {_load_text(p.loadavg_after)} after "
        "(a shared machine: other processes' load slows wall-clock timings).",
    ]


def write_record(
    out: Path,
    prov: Provenance,
    res: dict[str, Any],
    to_markdown: Callable[[dict[str, Any], list[str]], str],
) -> Path:
    """``out``.json (``res`` with its provenance) and ``out``.md; returns the .md path."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"provenance": prov.to_dict(), **res}, indent=1))
    out.with_suffix(".md").write_text(to_markdown(res, header_lines(prov)))
    return out.with_suffix(".md")


def wall_stats(samples_s: Sequence[float]) -> dict[str, float]:
    """Median, lower decile (p10) and p90 of wall-clock samples, in seconds."""
    if not samples_s:
        raise ValueError("samples_s is empty: nothing was timed")
    return {
        "median_s": lower_quantile(samples_s, 0.5),
        "p10_s": lower_quantile(samples_s, 0.1),
        "p90_s": lower_quantile(samples_s, 0.9),
    }
