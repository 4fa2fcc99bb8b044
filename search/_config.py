"""Experiment configuration: a TOML file parsed into frozen dataclasses.

Every key is checked: an unknown key, a wrong type, an unknown objective,
constraint, profile or sampler raises ``ConfigError`` naming the key and value.
Command-line flags override the file through ``with_overrides``.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import costmodel
import hw_profiles
import searchspace
from costmodel import PRECISIONS, CostReport
from search._estimators import BUDGET_ESTIMATOR_KINDS, EstimatorConfig
from search._fidelity import FidelityConfig
from search._objectives import (
    CONSTRAINT_METRICS,
    OBJECTIVE_METRICS,
    MetricRef,
    parse_metric,
)
from search._user_estimator import FunctionEstimatorConfig, is_function_spec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SAMPLERS = ("nsga2", "tpe", "random", "gp")
DEFAULT_RUN_DIR = "roofnas-runs"
# Example experiments ship inside the package; `--config NAME` loads NAME.toml from here.
EXPERIMENTS_DIR = Path(__file__).resolve().parent / "experiments"
DEFAULT_EXPERIMENT = "default"
# Config keys that do not define the search (budget, names, where things are stored): two
# configs that differ only in these may share a study.
NOT_FINGERPRINTED = ("trials", "study", "storage", "run_dir", "mlflow", "name")


class ConfigError(ValueError):
    """A bad experiment configuration; the message names the key and the value."""


@dataclass(frozen=True)
class HardwareTarget:
    """One deployment target: a profile at a precision, batch and runtime."""

    name: str  # what objectives and constraints refer to: "latency_s@<name>"
    profile: str  # built-in name or path to a profile TOML
    precision: str = "fp32"
    batch: int = 1
    runtime: str = "eager"

    def estimate(self, arch: Any) -> CostReport:
        """``costmodel.estimate`` of ``arch`` on this target."""
        return costmodel.estimate(
            arch, hw=self.profile, precision=self.precision, batch=self.batch, runtime=self.runtime
        )


@dataclass(frozen=True)
class ObjectiveSpec:
    """One objective of the search: a metric and whether it is maximised or minimised."""

    metric: MetricRef
    direction: str  # "maximize" | "minimize"

    @property
    def name(self) -> str:
        return self.metric.name


@dataclass(frozen=True)
class Constraint:
    """``value <= limit`` is feasible; Optuna sees ``value / limit - 1`` (<= 0 feasible)."""

    metric: MetricRef
    limit: float

    @property
    def name(self) -> str:
        return self.metric.name


@dataclass(frozen=True)
class SamplerConfig:
    name: str = "nsga2"
    population_size: int = 20  # NSGA-II generation size


@dataclass(frozen=True)
class MlflowConfig:
    enabled: bool = True
    tracking_uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else sqlite under run_dir
    experiment: str | None = None  # None: "roofnas/<config name>"
    flush_every_trials: int = 100  # child runs are written in batches (see _mlflow.py)
    flush_every_s: float = 30.0
    log_models: int = 3  # mlflow.pytorch.log_model for this many Pareto architectures


@dataclass(frozen=True)
class ExperimentConfig:
    name: str
    space: str  # resolved path to the search-space TOML
    objectives: tuple[ObjectiveSpec, ...]
    hardware: tuple[HardwareTarget, ...]
    constraints: tuple[Constraint, ...] = ()
    sampler: SamplerConfig = SamplerConfig()
    trials: int = 200
    seed: int = 0
    # a built-in kind's settings (EstimatorConfig) or a user function's
    # (FunctionEstimatorConfig: `function` with an absolute path, `metric`)
    estimator: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    # objective name -> (best, worst): hypervolume uses (v - best) / (worst - best), ref point 1
    hv_bounds: Mapping[str, tuple[float, float]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    mlflow: MlflowConfig = MlflowConfig()
    fidelity: FidelityConfig | None = None  # [fidelity]: stop poor trials at rung budgets
    study: str | None = None  # None: the config name
    storage: str | None = None  # None: journal file under run_dir
    run_dir: str = DEFAULT_RUN_DIR
    source: str = "<default>"  # where the config came from

    @property
    def study_name(self) -> str:
        return self.study or self.name

    @property
    def primary(self) -> HardwareTarget:
        return self.hardware[0]

    def target(self, name: str | None) -> HardwareTarget:
        if name is None:
            return self.primary
        for t in self.hardware:
            if t.name == name:
                return t
        raise ConfigError(f"no hardware target named {name!r}; targets: {self.target_names}")

    @property
    def target_names(self) -> list[str]:
        return [t.name for t in self.hardware]

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    @property
    def storage_url(self) -> str:
        return self.storage or str(Path(self.run_dir) / "optuna.journal")

    @property
    def results_dir(self) -> Path:
        """Where a run writes its result files: <run_dir>/<study name, file-safe>."""
        return Path(self.run_dir) / safe_name(self.study_name)

    def cost_reports(self, arch: Any) -> dict[str, CostReport]:
        """``arch`` costed on every hardware target, by target name."""
        return {t.name: t.estimate(arch) for t in self.hardware}

    def to_dict(self) -> dict[str, Any]:
        """A TOML-like plain dict; ``parse_config(to_dict())`` gives back an equal config."""
        d = {
            "name": self.name,
            "space": self.space,
            "trials": self.trials,
            "seed": self.seed,
            "study": self.study,
            "storage": self.storage,
            "run_dir": self.run_dir,
            "objectives": [o.name for o in self.objectives],
            "constraints": {c.name: c.limit for c in self.constraints},
            "hardware": [dataclasses.asdict(t) for t in self.hardware],
            "sampler": dataclasses.asdict(self.sampler),
            "estimator": dict(self.estimator),
            "hypervolume": {k: list(v) for k, v in self.hv_bounds.items()},
            "mlflow": dataclasses.asdict(self.mlflow),
        }
        # Only when set: a config without one keeps the fingerprint its studies were made with.
        if self.fidelity is not None:
            d["fidelity"] = dataclasses.asdict(self.fidelity)
        return d

    def fingerprint(self) -> str:
        """Hash of what defines the search (not the budget, names or where things are stored).

        Two runs (or workers) may share a study only when their fingerprints agree. Files
        count by their contents, not their paths: a space TOML and a user's estimator
        function file. So workers on machines with different checkout paths agree, and an
        edited estimator no longer continues a study that an older version of it scored.
        """
        return self._fingerprint(by_contents=True)

    def accepted_fingerprints(self) -> tuple[str, ...]:
        """Fingerprints of studies this config may continue: its own, then the one releases
        before content hashing of the estimator file gave it (that file's path stood in)."""
        return tuple(dict.fromkeys((self.fingerprint(), self._fingerprint(by_contents=False))))

    def _fingerprint(self, *, by_contents: bool) -> str:
        d = self.to_dict()
        for k in NOT_FINGERPRINTED:
            d.pop(k)
        d["space"] = _file_sha256(self.space) or d["space"]
        function = d["estimator"].get("function")
        if by_contents and function:
            path, _, name = function.rpartition(":")
            digest = _file_sha256(path)
            if digest is not None:
                d["estimator"]["function"] = f"sha256={digest}:{name}"
        blob = json.dumps(d, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def with_overrides(
        self,
        *,
        trials: int | None = None,
        study: str | None = None,
        storage: str | None = None,
        seed: int | None = None,
        hw: str | None = None,
        precision: str | None = None,
        sampler: str | None = None,
        estimator: str | None = None,
        run_dir: str | None = None,
        mlflow: bool | None = None,
        min_budget: float | None = None,
        max_budget: float | None = None,
        eta: int | None = None,
    ) -> ExperimentConfig:
        """Command-line overrides; ``hw``/``precision`` replace the primary (first) target's.

        ``min_budget``/``max_budget``/``eta`` set keys of the ``[fidelity]`` table (made when
        the config has none).
        """
        d = self.to_dict()
        budgets = {"min_budget": min_budget, "max_budget": max_budget, "eta": eta}
        if any(v is not None for v in budgets.values()):
            d["fidelity"] = {
                **d.get("fidelity", {}),
                **{k: v for k, v in budgets.items() if v is not None},
            }
        if trials is not None:
            d["trials"] = trials
        if study is not None:
            d["study"] = study
        if storage is not None:
            d["storage"] = storage
        if seed is not None:
            d["seed"] = seed
        if run_dir is not None:
            d["run_dir"] = run_dir
        if hw is not None:
            first = d["hardware"][0]
            if first["name"] == first["profile"]:
                first["name"] = Path(hw).stem if hw.endswith(".toml") else hw
            first["profile"] = hw
        if precision is not None:
            d["hardware"][0]["precision"] = precision
        if sampler is not None:
            d["sampler"]["name"] = sampler
        if estimator is not None:
            d["estimator"] = _estimator_override(d["estimator"], estimator)
        if mlflow is not None:
            d["mlflow"]["enabled"] = mlflow
        return parse_config(d, source=self.source, base_dir=None)


def _file_sha256(path: str) -> str | None:
    """The SHA-256 of a file's bytes; None when ``path`` is no readable file (a space name)."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def _estimator_override(table: dict[str, Any], estimator: str) -> dict[str, Any]:
    """``--estimator``: a built-in kind (other settings kept) or ``PATH.py:FUNC``.

    A function's path is relative to the current directory; its table keeps only ``metric``.
    """
    if is_function_spec(estimator):
        out = {"function": estimator}
        if "metric" in table and "function" in table:
            out["metric"] = table["metric"]
        try:
            return FunctionEstimatorConfig.from_dict(out, Path.cwd()).to_dict()
        except ValueError as e:
            raise ConfigError(f"--estimator: {e}") from None
    if "function" in table:
        return {"kind": estimator}
    return {**table, "kind": estimator}


def safe_name(name: str) -> str:
    """``name`` as a file or folder name: anything but letters, digits, ``-_.`` becomes ``_``."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


# ---------------------------------------------------------------------------- parsing

_TOP_KEYS = {
    "name", "space", "objectives", "constraints", "hardware", "sampler", "trials", "seed",
    "estimator", "hypervolume", "mlflow", "study", "storage", "run_dir", "description",
    "fidelity",
}  # fmt: skip


def _check_keys(d: Mapping[str, Any], allowed: set[str] | Sequence[str], where: str) -> None:
    for key in d:
        if key not in allowed:
            hint = difflib.get_close_matches(str(key), list(allowed), n=1)
            raise ConfigError(
                f"{where}: unknown key {key!r}"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
                + f"; allowed: {sorted(allowed)}"
            )


def _typed(d: Mapping[str, Any], key: str, types: type | tuple[type, ...], where: str) -> Any:
    value = d[key]
    # bool is an int in Python; refuse it where a number is meant.
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise ConfigError(f"{where}{key}={value!r} must be {_tname(types)}, not a bool")
    if not isinstance(value, types):
        raise ConfigError(f"{where}{key}={value!r} must be {_tname(types)}")
    return value


def _tname(types: type | tuple[type, ...]) -> str:
    ts = types if isinstance(types, tuple) else (types,)
    return " or ".join(t.__name__ for t in ts)


def resolve_space(space: str, base_dir: Path | None) -> str:
    """A path (absolute, relative to the config file, or to the cwd) or a named space."""
    candidates = []
    p = Path(space)
    if p.is_absolute():
        candidates.append(p)
    else:
        if base_dir is not None:
            candidates.append(base_dir / p)
        candidates.append(Path.cwd() / p)
        if p.suffix != ".toml":
            candidates.append(searchspace.SPACES_DIR / f"{space}.toml")
    for c in candidates:
        if c.is_file():
            return str(c.resolve())
    known = searchspace.available_spaces()
    raise ConfigError(
        f"space={space!r}: no such search-space file (looked in "
        f"{[str(c) for c in candidates]}); named spaces: {known}"
    )


def _parse_hardware(items: Any) -> tuple[HardwareTarget, ...]:
    if isinstance(items, Mapping):
        items = [items]
    if not isinstance(items, list) or not items:
        raise ConfigError(f"hardware={items!r} must be a non-empty list of [[hardware]] tables")
    out: list[HardwareTarget] = []
    for i, h in enumerate(items):
        where = f"hardware[{i}]."
        if not isinstance(h, Mapping):
            raise ConfigError(f"hardware[{i}]={h!r} must be a table")
        _check_keys(h, {"name", "profile", "precision", "batch", "runtime"}, f"hardware[{i}]")
        if "profile" not in h:
            raise ConfigError(
                f"hardware[{i}]: missing key 'profile' (known: {hw_profiles.available()})"
            )
        profile = _typed(h, "profile", str, where)
        try:
            loaded = hw_profiles.load(profile)
        except hw_profiles.ProfileError as e:
            raise ConfigError(f"hardware[{i}].profile={profile!r}: {e}") from None
        default_name = Path(profile).stem if profile.endswith(".toml") else profile
        name = _typed(h, "name", str, where) if "name" in h else default_name
        precision = _typed(h, "precision", str, where) if "precision" in h else "fp32"
        if precision not in PRECISIONS:
            raise ConfigError(
                f"hardware[{i}].precision={precision!r} is not one of {list(PRECISIONS)}"
            )
        if precision not in loaded.peak_ops_per_s:
            raise ConfigError(
                f"hardware[{i}].precision={precision!r}: profile {profile!r} has no peak for it; "
                f"it has {sorted(loaded.peak_ops_per_s)}"
            )
        batch = _typed(h, "batch", int, where) if "batch" in h else 1
        if batch < 1:
            raise ConfigError(f"hardware[{i}].batch={batch} must be >= 1")
        runtime = _typed(h, "runtime", str, where) if "runtime" in h else "eager"
        try:
            loaded.runtime(runtime)
        except (KeyError, ValueError) as e:
            raise ConfigError(f"hardware[{i}].runtime={runtime!r}: {e}") from None
        out.append(HardwareTarget(name, profile, precision, batch, runtime))
    names = [t.name for t in out]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ConfigError(f"hardware: duplicate target names {sorted(dup)}; give each a 'name'")
    return tuple(out)


def _check_ref(ref: MetricRef, targets: Sequence[HardwareTarget], key: str) -> None:
    if ref.target is not None and ref.target not in [t.name for t in targets]:
        raise ConfigError(
            f"{key}={ref.name!r}: no hardware target named {ref.target!r}; "
            f"targets: {[t.name for t in targets]}"
        )


def parse_config(
    data: Mapping[str, Any], *, source: str = "<dict>", base_dir: Path | None = None
) -> ExperimentConfig:
    """Validate a TOML-like mapping into an ``ExperimentConfig``."""
    _check_keys(data, _TOP_KEYS, source)
    for req in ("space", "objectives", "hardware"):
        if req not in data:
            raise ConfigError(f"{source}: missing key {req!r}")
    name = _typed(data, "name", str, "") if "name" in data else Path(source).stem
    space = resolve_space(_typed(data, "space", str, ""), base_dir)
    hardware = _parse_hardware(data["hardware"])

    objs = _typed(data, "objectives", list, "")
    if len(objs) < 2:
        raise ConfigError(f"objectives={objs!r}: a multi-objective search needs two or more")
    objectives = []
    for o in objs:
        if not isinstance(o, str):
            raise ConfigError(f"objectives: {o!r} must be a string such as 'latency_s@t4'")
        try:
            ref = parse_metric(o, OBJECTIVE_METRICS)
        except ValueError as e:
            raise ConfigError(f"objectives: {e}") from None
        _check_ref(ref, hardware, "objectives")
        direction = "maximize" if ref.metric == "accuracy" else "minimize"
        objectives.append(ObjectiveSpec(ref, direction))
    if len({o.name for o in objectives}) != len(objectives):
        raise ConfigError(f"objectives={objs!r} lists one objective twice")

    cons = data.get("constraints", {})
    if not isinstance(cons, Mapping):
        raise ConfigError(f"constraints={cons!r} must be a table of name = limit")
    constraints = []
    for key, limit in cons.items():
        try:
            ref = parse_metric(key, CONSTRAINT_METRICS)
        except ValueError as e:
            raise ConfigError(f"constraints: {e}") from None
        _check_ref(ref, hardware, "constraints")
        if isinstance(limit, bool) or not isinstance(limit, int | float) or not limit > 0:
            raise ConfigError(f"constraints.{key}={limit!r} must be a positive number")
        constraints.append(Constraint(ref, float(limit)))

    samp = data.get("sampler", {})
    if isinstance(samp, str):
        samp = {"name": samp}
    if not isinstance(samp, Mapping):
        raise ConfigError(f"sampler={samp!r} must be a table or a sampler name")
    _check_keys(samp, {"name", "population_size"}, "sampler")
    sname = _typed(samp, "name", str, "sampler.") if "name" in samp else "nsga2"
    if sname not in SAMPLERS:
        raise ConfigError(f"sampler.name={sname!r} is not one of {list(SAMPLERS)}")
    pop = _typed(samp, "population_size", int, "sampler.") if "population_size" in samp else 20
    if pop < 2:
        raise ConfigError(f"sampler.population_size={pop} must be >= 2")
    sampler = SamplerConfig(sname, pop)

    trials = _typed(data, "trials", int, "") if "trials" in data else 200
    if trials < 1:
        raise ConfigError(f"trials={trials} must be >= 1")
    seed = _typed(data, "seed", int, "") if "seed" in data else 0

    est = data.get("estimator", {})
    if not isinstance(est, Mapping):
        raise ConfigError(f"estimator={est!r} must be a table")
    est = _validate_estimator(est, base_dir)
    fidelity = _parse_fidelity(data.get("fidelity"), est, objectives)

    hv = _parse_hv(data.get("hypervolume", {}), objectives, constraints)
    ml = _parse_mlflow(data.get("mlflow", {}))

    study = _typed(data, "study", str, "") if data.get("study") is not None else None
    storage = _typed(data, "storage", str, "") if data.get("storage") else None
    run_dir = _typed(data, "run_dir", str, "") if "run_dir" in data else DEFAULT_RUN_DIR
    return ExperimentConfig(
        name=name,
        space=space,
        objectives=tuple(objectives),
        hardware=hardware,
        constraints=tuple(constraints),
        sampler=sampler,
        trials=trials,
        seed=seed,
        estimator=MappingProxyType(est),
        hv_bounds=MappingProxyType(hv),
        mlflow=ml,
        fidelity=fidelity,
        study=study,
        storage=storage,
        run_dir=run_dir,
        source=source,
    )


def _validate_estimator(est: Mapping[str, Any], base_dir: Path | None) -> dict[str, Any]:
    """The checked table: a built-in kind's settings, or a user function (path made absolute)."""
    try:
        if "function" in est:
            return FunctionEstimatorConfig.from_dict(est, base_dir).to_dict()
        EstimatorConfig.from_dict(est)
    except ValueError as e:
        raise ConfigError(f"estimator: {e}") from None
    return dict(est)


def _parse_fidelity(
    fid: Any, est: Mapping[str, Any], objectives: Sequence[ObjectiveSpec]
) -> FidelityConfig | None:
    """The ``[fidelity]`` table, for an estimator that trains in budgets (see search._fidelity)."""
    if fid is None:
        return None
    try:
        out = FidelityConfig.from_dict(fid)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if not any(o.metric.metric == "accuracy" for o in objectives):
        raise ConfigError(
            f"fidelity={dict(fid)!r}: the rung rule compares accuracy, and objectives="
            f"{[o.name for o in objectives]!r} has none"
        )
    if "function" in est:  # its signature is checked when it is loaded, before any trial
        return out
    kind = EstimatorConfig.from_dict(est).kind
    if kind not in BUDGET_ESTIMATOR_KINDS:
        raise ConfigError(
            f"fidelity={dict(fid)!r} needs an estimator that trains in budgets "
            f"({list(BUDGET_ESTIMATOR_KINDS)}); estimator.kind={kind!r} cannot use budgets"
        )
    if kind == "train":
        for key in ("min_budget", "max_budget"):
            v = getattr(out, key)
            if v != int(v):
                raise ConfigError(
                    f"fidelity.{key}={v!r} must be a whole number of epochs for "
                    f"estimator.kind='train'"
                )
    return out


def _parse_hv(
    hv: Any, objectives: Sequence[ObjectiveSpec], constraints: Sequence[Constraint]
) -> dict[str, tuple[float, float]]:
    """(best, worst) per objective; defaults: accuracy (1, 0), a cost (0, its constraint limit)."""
    if not isinstance(hv, Mapping):
        raise ConfigError(f"hypervolume={hv!r} must be a table of objective = [best, worst]")
    names = [o.name for o in objectives]
    _check_keys(hv, names, "hypervolume")
    limits = {c.name: c.limit for c in constraints}
    out: dict[str, tuple[float, float]] = {}
    for o in objectives:
        if o.name in hv:
            v = hv[o.name]
            ok = isinstance(v, list) and len(v) == 2
            ok = ok and all(isinstance(x, int | float) and not isinstance(x, bool) for x in v)
            if not ok or v[0] == v[1]:
                raise ConfigError(
                    f"hypervolume.{o.name}={v!r} must be [best, worst], two different numbers"
                )
            out[o.name] = (float(v[0]), float(v[1]))
        elif o.metric.metric == "accuracy":
            out[o.name] = (1.0, 0.0)
        elif o.name in limits:
            out[o.name] = (0.0, limits[o.name])
        else:
            raise ConfigError(
                f"hypervolume: objective {o.name!r} needs bounds (no constraint gives its scale); "
                f'add [hypervolume] "{o.name}" = [best, worst]'
            )
    return out


def _parse_mlflow(ml: Any) -> MlflowConfig:
    if not isinstance(ml, Mapping):
        raise ConfigError(f"mlflow={ml!r} must be a table")
    fields = {f.name: f for f in dataclasses.fields(MlflowConfig)}
    _check_keys(ml, set(fields), "mlflow")
    kinds: dict[str, type | tuple[type, ...]] = {
        "enabled": bool,
        "tracking_uri": str,
        "experiment": str,
        "flush_every_trials": int,
        "flush_every_s": (int, float),
        "log_models": int,
    }
    kw = {k: _typed(ml, k, kinds[k], "mlflow.") for k in ml if ml[k] is not None}
    for k in ("flush_every_trials", "log_models"):
        if k in kw and kw[k] < (1 if k == "flush_every_trials" else 0):
            raise ConfigError(f"mlflow.{k}={kw[k]} is out of range")
    return MlflowConfig(**kw)


def available_experiments() -> list[str]:
    """Names of the experiments shipped in the package (``--config NAME``)."""
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.toml"))


def load_config(path: str | Path | None = None) -> ExperimentConfig:
    """Load an experiment: a TOML path, or the name of a shipped one (``None``: "default")."""
    name = DEFAULT_EXPERIMENT if path is None else str(path)
    p = Path(name)
    shipped = not p.is_file() and p.suffix != ".toml" and p.parent == Path(".")
    if shipped:
        p = EXPERIMENTS_DIR / f"{name}.toml"
        if not p.is_file():
            hint = difflib.get_close_matches(name, available_experiments(), n=1)
            raise ConfigError(
                f"config={name!r}: no such file, nor a shipped experiment"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
                + f"; shipped: {available_experiments()}"
            )
    elif not p.is_file():
        raise ConfigError(f"config={name!r}: no such file")
    # A shipped experiment is known by its name, wherever the package is installed.
    text, source, base = p.read_text(), name if shipped else str(p), p.resolve().parent
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from None
    return parse_config(data, source=source, base_dir=base)
