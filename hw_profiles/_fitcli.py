"""``python -m hw_profiles fit``: fit a profile to a CSV of measured whole networks.

Command-line glue, so it reaches up the layers (``hw_profiles._cli`` imports
it only when ``fit`` runs): it reads the CSV, turns each
row's model into layer specs (a ``PATH.py:FACTORY`` traced by ``costmodel``'s
tracer, or a ``searchspace`` architecture string) and hands them to
``costmodel._fit.fit_networks``. Rows it cannot use are reported with their
line number and reason; the fit proceeds with the rest when at least
``MIN_ROWS`` remain.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import hashlib
import importlib.util
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import searchspace
from costmodel._fit import MeasuredNetwork, NetworkFit, fit_networks
from costmodel._formulas import count
from costmodel._spec import LayerSpec
from costmodel._trace import trace_layers
from hw_profiles._precision import PRECISIONS
from hw_profiles._schema import RUNTIMES, HardwareProfile, ProfileError, load, load_fresh
from hw_profiles._toml import profile_to_toml

COLUMNS = ("model", "input_shape", "batch", "precision", "runtime", "latency_s")
MIN_ROWS = 3  # fewer measured networks than this cannot pin even the host costs


class RowError(ValueError):
    """A CSV row the fit cannot use; the message names the field and its value."""


@dataclass(frozen=True)
class _Lowered:
    specs: tuple[LayerSpec, ...]
    extra_kernels: int


def parse_shape(text: str) -> tuple[int, int, int]:
    parts = text.strip().lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise RowError(f"input_shape={text!r} must be CxHxW with positive integers, e.g. 3x32x32")
    c, h, w = (int(p) for p in parts)
    return c, h, w


def _positive_int(text: str, field: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise RowError(f"{field}={text!r} must be an integer >= 1") from None
    if v < 1:
        raise RowError(f"{field}={text!r} must be an integer >= 1")
    return v


def _latency(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise RowError(f"latency_s={text!r} is not a number") from None
    if not math.isfinite(v) or v <= 0:
        raise RowError(f"latency_s={text!r} must be a finite number > 0")
    return v


class ModelResolver:
    """Layer specs of a row's model, cached per (model, shape, batch)."""

    def __init__(self, csv_dir: Path) -> None:
        self.csv_dir = csv_dir
        self._modules: dict[Path, ModuleType] = {}
        self._cache: dict[tuple[str, tuple[int, int, int], int], _Lowered] = {}

    def lower(self, model: str, shape: tuple[int, int, int], batch: int) -> _Lowered:
        key = (model, shape, batch)
        if key not in self._cache:
            self._cache[key] = self._lower(model, shape, batch)
        return self._cache[key]

    def _lower(self, model: str, shape: tuple[int, int, int], batch: int) -> _Lowered:
        text = model.strip()
        if text.startswith("|") or text.startswith("ofa:"):
            family = searchspace.NB201Net if text.startswith("|") else searchspace.OFANet
            try:
                net = family.from_string(text)
            except ValueError as e:
                raise RowError(f"model={text!r}: {e}") from None
            _same_shape(net.input_shape, shape)
            specs = tuple(net.lower(batch))
            launched = sum(1 for s in net.lower(1) if not _is_view(s))
            return _Lowered(specs, max(net.eager_kernels() - launched, 0))
        if ".py:" in text:
            return _Lowered(self._trace(text, shape, batch), 0)
        try:
            arch = searchspace.Architecture.from_string(text)
        except (ValueError, KeyError, TypeError) as e:
            raise RowError(
                f"model={text!r} is neither PATH.py:FACTORY nor an architecture string: {e}"
            ) from None
        _same_shape(arch.input_shape, shape)
        return _Lowered(tuple(arch.lower(batch)), 0)

    def _factory(self, text: str) -> Callable[[], Any]:
        path_text, _, name = text.rpartition(":")
        path = Path(path_text)
        if not path.is_absolute() and not path.exists():
            path = self.csv_dir / path
        if not path.is_file():
            raise RowError(f"model={text!r}: file {path_text!r} not found")
        path = path.resolve()
        if path not in self._modules:
            spec = importlib.util.spec_from_file_location(f"_fit_model_{len(self._modules)}", path)
            if spec is None or spec.loader is None:
                raise RowError(f"model={text!r}: {path} cannot be imported")
            module = importlib.util.module_from_spec(spec)
            try:
                spec.loader.exec_module(module)
            except Exception as e:  # a user's file: any error is that row's problem
                raise RowError(f"model={text!r}: importing {path} failed: {e!r}") from None
            self._modules[path] = module
        factory = getattr(self._modules[path], name, None)
        if not callable(factory):
            raise RowError(f"model={text!r}: {path.name} has no callable {name!r}")
        return factory

    def _trace(self, text: str, shape: tuple[int, int, int], batch: int) -> tuple[LayerSpec, ...]:
        factory = self._factory(text)
        try:
            module = factory()
            specs, unsupported = trace_layers(module, (batch, *shape))
        except Exception as e:  # a user's model: any error is that row's problem
            raise RowError(f"model={text!r}: building or tracing failed: {e!r}") from None
        if unsupported:
            raise RowError(f"model={text!r}: layers without a cost formula: {list(unsupported)}")
        return specs


def _is_view(spec: LayerSpec) -> bool:
    return count(spec).alias


def _same_shape(own: Sequence[int], shape: tuple[int, int, int]) -> None:
    if tuple(own) != shape:
        want = "x".join(str(v) for v in own)
        raise RowError(f"input_shape={'x'.join(map(str, shape))} differs from the network's {want}")


def read_rows(
    path: Path, base: HardwareProfile, resolver: ModelResolver
) -> tuple[list[MeasuredNetwork], list[tuple[int, str]]]:
    """(measured networks, [(line, reason)] of refused rows) from a measurements CSV."""
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ProfileError(f"{path}: missing column(s) {missing}; need {list(COLUMNS)}")
        good: list[MeasuredNetwork] = []
        refused: list[tuple[int, str]] = []
        for row in reader:
            line = reader.line_num
            try:
                good.append(_measured(row, base, resolver, good))
            except RowError as e:
                refused.append((line, str(e)))
    return good, refused


def _measured(
    row: dict[str, str],
    base: HardwareProfile,
    resolver: ModelResolver,
    good: Sequence[MeasuredNetwork],
) -> MeasuredNetwork:
    precision = (row["precision"] or "").strip()
    runtime = (row["runtime"] or "").strip()
    if precision not in PRECISIONS:
        raise RowError(f"precision={precision!r} is not one of {list(PRECISIONS)}")
    if precision not in base.peak_ops_per_s:
        raise RowError(f"precision={precision!r}: the base profile has no peak for it")
    if runtime not in RUNTIMES:
        raise RowError(f"runtime={runtime!r} is not one of {list(RUNTIMES)}")
    if good and (precision, runtime) != (good[0].precision, good[0].runtime):
        raise RowError(
            f"precision={precision!r}, runtime={runtime!r} differ from the first usable row's "
            f"{good[0].precision!r}, {good[0].runtime!r} (fit one at a time)"
        )
    shape = parse_shape(row["input_shape"] or "")
    batch = _positive_int(row["batch"] or "", "batch")
    latency_s = _latency(row["latency_s"] or "")
    if not (row["model"] or "").strip():
        raise RowError("model is empty")
    lowered = resolver.lower(row["model"], shape, batch)
    return MeasuredNetwork(lowered.specs, latency_s, precision, runtime, lowered.extra_kernels)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m hw_profiles fit",
        description="Fit a profile's host costs, device cost per kernel and efficiencies to "
        "measured whole-network latencies, with a base profile as the prior.",
    )
    p.add_argument("--base", required=True, help="built-in profile name or TOML path (the prior)")
    p.add_argument("--measurements", required=True, help=f"CSV with columns {','.join(COLUMNS)}")
    p.add_argument("--out", required=True, help="TOML file to write")
    p.add_argument("--name", default=None, help="profile name (default <base>-fitted)")
    p.add_argument(
        "--prior-weight",
        type=float,
        default=0.05,
        help="pull of each parameter toward the base profile, per unit of log (default 0.05)",
    )
    return p


def _fit_table(
    base_name: str,
    path: Path,
    data: bytes,
    n: int,
    refused: int,
    fit: NetworkFit,
    rows: Sequence[MeasuredNetwork],
) -> dict[str, Any]:
    return {
        "base": base_name,
        "measurements": path.name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "rows": n,
        "refused_rows": refused,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "precision": rows[0].precision,
        "runtime": rows[0].runtime,
        "parameters": dict(fit.parameters),
        "prior": dict(fit.prior),
        "fit_mdape": fit.fit_mdape,
        "fit_spearman": fit.fit_spearman,
        "cv_mdape": fit.cv_mdape,
        "cv_spearman": fit.cv_spearman,
        "cv_folds": fit.cv_folds,
    }


def fit_main(argv: Sequence[str]) -> int:
    """``python -m hw_profiles fit``: read, fit, report and write; 2 on unusable input."""
    args = _parser().parse_args(list(argv))
    out, path = Path(args.out), Path(args.measurements)
    if out.suffix != ".toml":
        print(f"fit: --out={args.out!r} must end in .toml", file=sys.stderr)
        return 2
    if not path.is_file():
        print(f"fit: --measurements={args.measurements!r} not found", file=sys.stderr)
        return 2
    try:
        base = load(args.base)
        rows, refused = read_rows(path, base, ModelResolver(path.parent))
    except ProfileError as e:
        print(f"fit: {e}", file=sys.stderr)
        return 2
    for line, reason in refused:
        print(f"fit: {path.name}:{line}: refused: {reason}", file=sys.stderr)
    if len(rows) < MIN_ROWS:
        print(f"fit: {len(rows)} usable row(s), need at least {MIN_ROWS}", file=sys.stderr)
        return 2
    fit = fit_networks(base, rows, prior_weight=args.prior_weight)
    name = args.name or f"{base.name}-fitted"
    hw = dataclasses.replace(
        fit.profile,
        name=name,
        source=f"{base.name} ({base.source}) with eager host/device costs and efficiencies "
        f"fitted to {len(rows)} measured networks in {path.name} by `python -m hw_profiles fit`",
    )
    header = (
        "Written by `python -m hw_profiles fit` (costmodel/_fit.py: fit_networks).\n"
        "Ceilings from the base profile; [fit] records the measurements and errors."
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    table = _fit_table(base.name, path, path.read_bytes(), len(rows), len(refused), fit, rows)
    out.write_text(profile_to_toml(hw, table, header, table="fit"))
    load_fresh(out)  # the file must load with the schema it was written for
    print(f"fitted {len(rows)} rows ({len(refused)} refused) on base {base.name}:")
    for k, v in fit.parameters.items():
        unit = f"{v * 1e6:.2f} us" if k.endswith("_s") else f"{v:.3f}"
        print(f"  {k:22s} {unit}  (prior {fit.prior[k] * (1e6 if k.endswith('_s') else 1):.3g})")
    print(f"fit:  MdAPE {fit.fit_mdape:.1%}  Spearman {fit.fit_spearman:.3f}")
    print(
        f"{fit.cv_folds}-fold cross-validation (leave-one-out when folds = rows): "
        f"MdAPE {fit.cv_mdape:.1%}  Spearman {fit.cv_spearman:.3f}"
    )
    print(f"wrote {out}")
    return 0
