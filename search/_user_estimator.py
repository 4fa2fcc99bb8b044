"""A user's own accuracy estimator: ``FUNC(model, arch) -> float`` loaded from ``PATH.py:FUNC``.

``[estimator] function = "PATH.py:FUNC"`` (or ``search run --estimator PATH.py:FUNC``) makes
``FUNC`` the accuracy objective, higher is better. Per feasible candidate it is called once
with ``model = searchspace.build(arch)`` (built right after ``torch.manual_seed(seed)``, so
equal architectures start from equal weights) and the ``searchspace.Architecture``.

- It returns a finite number, or a mapping whose ``metric`` entry (default "accuracy") is the
  objective; the mapping's other finite numbers are kept as extra metrics of the trial.
- Taking ``budget`` and ``report`` as well (both, by those names) makes it a multi-fidelity
  estimator: it trains up to ``budget`` and calls ``report(value, step)`` as it goes, which
  may raise ``optuna.TrialPruned`` (let it through). That needs the experiment's
  ``[fidelity]`` table unless both parameters have defaults.
- An exception inside it fails that trial only (``EstimatorCallError`` keeps the traceback);
  anything that makes it unusable (missing file or name, a signature or return annotation it
  cannot be called with, a returned value that is not a finite number) is an
  ``EstimatorFunctionError``, which stops the search.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import math
import numbers
import traceback
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch

import searchspace
from costmodel import import_file
from search._fidelity import Reporter

__all__ = [
    "EstimatorCallError",
    "EstimatorFunctionError",
    "FunctionEstimatorConfig",
    "UserEstimator",
    "error_text",
    "is_function_spec",
]

DEFAULT_METRIC = "accuracy"
TRACEBACK_CHARS = 4000  # kept per failed trial: the end of the traceback, where the error is
_VALUE_CHARS = 200  # a returned value is quoted in an error up to this many characters
# Return annotations a user function may carry: a number, or a mapping of names to numbers.
_NUMBER_TYPES = (float, int)
_MAPPING_TYPES = (dict, Mapping, collections.abc.MutableMapping)
_ANNOTATION_NAMES = {"float", "int", "dict", "Dict", "Mapping", "MutableMapping"}


class EstimatorFunctionError(ValueError):
    """The user's estimator function cannot be used; the search stops (CLI exit code 2)."""


class EstimatorCallError(RuntimeError):
    """The user's estimator function raised: the trial fails, the search goes on.

    ``traceback_text`` is the end of the function's own traceback (``TRACEBACK_CHARS``).
    """

    def __init__(self, spec: str, error: Exception) -> None:
        super().__init__(f"estimator function {spec} raised {type(error).__name__}: {error}")
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        self.traceback_text = text[-TRACEBACK_CHARS:]


def error_text(error: BaseException) -> str:
    """The traceback a failed trial keeps: the user function's own, else ``error``'s."""
    if isinstance(error, EstimatorCallError):
        return error.traceback_text
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return text[-TRACEBACK_CHARS:]


def is_function_spec(text: str) -> bool:
    """``PATH.py:FUNC`` (or anything that tries to be one), as opposed to a built-in kind."""
    return ":" in text or text.endswith(".py")


@dataclass(frozen=True)
class FunctionEstimatorConfig:
    """The ``[estimator]`` table of a user function: ``function`` and ``metric``.

    ``function`` is ``PATH.py:FUNC`` with PATH made absolute at parse time (relative to
    ``base_dir``, the experiment file's folder, else the current directory); the file itself
    is only read when a search starts, so a study's stored config parses anywhere.
    """

    function: str
    metric: str = DEFAULT_METRIC

    def __post_init__(self) -> None:
        if not isinstance(self.function, str):
            raise ValueError(f"estimator.function={self.function!r} must be a string PATH.py:FUNC")
        path, _, name = self.function.rpartition(":")
        if not path.endswith(".py") or not name.isidentifier():
            raise ValueError(
                f"estimator.function={self.function!r} must be PATH.py:FUNC, a Python file and "
                "the name of a function in it"
            )
        if not isinstance(self.metric, str) or not self.metric:
            raise ValueError(f"estimator.metric={self.metric!r} must be a non-empty string")

    @property
    def path(self) -> Path:
        return Path(self.function.rpartition(":")[0])

    @property
    def name(self) -> str:
        return self.function.rpartition(":")[2]

    @classmethod
    def from_dict(
        cls, d: Mapping[str, Any], base_dir: Path | None = None
    ) -> FunctionEstimatorConfig:
        """Validate a table; unknown keys and bad values raise ValueError naming both."""
        known = [f.name for f in dataclasses.fields(cls)]
        for key in d:
            if key not in known:
                hint = " (`kind` picks a built-in estimator instead)" if key == "kind" else ""
                raise ValueError(
                    f"estimator.{key}={d[key]!r} does not go with estimator.function="
                    f"{d.get('function')!r}{hint}; a function's table has only {known}"
                )
        cfg = cls(**dict(d))
        path = cfg.path.expanduser()
        if not path.is_absolute():
            path = (base_dir if base_dir is not None else Path.cwd()) / path
        return dataclasses.replace(cfg, function=f"{path.resolve()}:{cfg.name}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------- loading and checking


def load_function(cfg: FunctionEstimatorConfig) -> Callable[..., Any]:
    """``FUNC`` of ``PATH.py``; EstimatorFunctionError naming the spec when it cannot be had."""
    spec = cfg.function
    path = cfg.path
    if not path.is_file():
        raise EstimatorFunctionError(f"estimator function {spec}: no such file {str(path)!r}")
    module = _import_file(path, spec)  # once per process: import_file keeps it
    if not hasattr(module, cfg.name):
        public = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise EstimatorFunctionError(
            f"estimator function {spec}: {path.name} has no {cfg.name!r}; its callables: {public}"
        )
    fn = getattr(module, cfg.name)
    if not callable(fn):
        raise EstimatorFunctionError(
            f"estimator function {spec}: {cfg.name}={_quote(fn)} ({type(fn).__name__}) "
            "is not callable"
        )
    return fn


def _import_file(path: Path, spec_text: str) -> types.ModuleType:
    try:
        return import_file(path, "roofnas_user_estimator_")
    except Exception as e:
        raise EstimatorFunctionError(
            f"estimator function {spec_text}: importing {path.name} raised {type(e).__name__}: {e}"
        ) from e


@dataclass(frozen=True)
class CallShape:
    """How a checked function is called."""

    takes_fidelity: bool  # accepts budget= and report=
    fidelity_required: bool  # and they have no defaults: the experiment needs [fidelity]


def check_signature(fn: Callable[..., Any], spec: str) -> CallShape:
    """FUNC(model, arch) must bind; budget and report come both or not at all."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins and extension functions hide theirs
        return CallShape(False, False)
    params = sig.parameters
    named = {
        k: params[k]
        for k in ("budget", "report")
        if k in params and params[k].kind is not inspect.Parameter.POSITIONAL_ONLY
    }
    if len(named) == 1:
        have, lack = next(iter(named)), ({"budget", "report"} - set(named)).pop()
        raise EstimatorFunctionError(
            f"estimator function {spec}{sig}: takes {have!r} but not {lack!r}; a "
            "multi-fidelity estimator takes both (budget=, report=), a plain one neither"
        )
    takes = len(named) == 2
    try:
        if takes:
            sig.bind(None, None, budget=1.0, report=None)
        else:
            sig.bind(None, None)
    except TypeError as e:
        extra = ", budget, report" if takes else ""
        raise EstimatorFunctionError(
            f"estimator function {spec}{sig} cannot be called as "
            f"{spec.rpartition(':')[2]}(model, arch{extra}): {e}"
        ) from None
    required = takes and any(p.default is inspect.Parameter.empty for p in named.values())
    _check_return_annotation(fn, sig, spec)
    return CallShape(takes, required)


def _check_return_annotation(fn: Callable[..., Any], sig: inspect.Signature, spec: str) -> None:
    ann = sig.return_annotation
    if ann is inspect.Signature.empty:
        return
    if isinstance(ann, str):  # `from __future__ import annotations`: evaluate when we can
        try:
            ann = inspect.signature(fn, eval_str=True).return_annotation
        except Exception:  # a name only a type checker knows: judge the text
            if _annotation_text_ok(ann):
                return
            _bad_annotation(spec, ann)
    if not _annotation_ok(ann):
        _bad_annotation(spec, ann)


def _annotation_ok(ann: Any) -> bool:
    if ann is bool:
        return False
    if ann in _NUMBER_TYPES or ann in _MAPPING_TYPES:
        return True
    origin = typing.get_origin(ann)
    if origin in (typing.Union, types.UnionType):
        return all(_annotation_ok(a) for a in typing.get_args(ann))
    return origin in _MAPPING_TYPES


def _annotation_text_ok(text: str) -> bool:
    parts = [p.strip() for p in text.split("|")]
    heads = [p.split("[", 1)[0].rsplit(".", 1)[-1] for p in parts]
    return all(h in _ANNOTATION_NAMES for h in heads)


def _bad_annotation(spec: str, ann: Any) -> None:
    text = ann if isinstance(ann, str) else getattr(ann, "__name__", None) or repr(ann)
    raise EstimatorFunctionError(
        f"estimator function {spec}: return annotation {text!r} is not float, int or a "
        "mapping (dict[str, float]); the accuracy objective needs one of those"
    )


# ---------------------------------------------------------------- return values


def objective_of(value: Any, metric: str, spec: str) -> tuple[float, dict[str, float]]:
    """(objective, extra metrics) of a returned or reported value; EstimatorFunctionError else.

    A number (not a bool) is the objective; a mapping's ``metric`` entry is, and its other
    finite numbers are extra metrics (anything else in it is left out).
    """
    if _is_number(value):
        return _finite(value, spec, value), {}
    if isinstance(value, Mapping):
        if metric not in value:
            raise EstimatorFunctionError(
                f"estimator function {spec} returned {_quote(value)} (type "
                f"{type(value).__name__}) without the objective key {metric!r} "
                "(set [estimator] metric = NAME to use another key)"
            )
        objective = value[metric]
        if not _is_number(objective):
            _bad_return(spec, value, f"its {metric!r} entry is {_quote(objective)}")
        extras = {
            str(k): float(v)
            for k, v in value.items()
            if k != metric and _is_number(v) and math.isfinite(float(v))
        }
        return _finite(objective, spec, value), extras
    hint = "; call .item() on a one-element tensor" if hasattr(value, "item") else ""
    _bad_return(spec, value, "not a number nor a mapping" + hint)
    raise AssertionError  # unreachable: _bad_return raises


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _finite(v: Any, spec: str, returned: Any) -> float:
    f = float(v)
    if not math.isfinite(f):
        _bad_return(spec, returned, f"the objective {f} is not finite")
    return f


def _bad_return(spec: str, value: Any, why: str) -> None:
    raise EstimatorFunctionError(
        f"estimator function {spec} returned {_quote(value)} (type {type(value).__name__}): "
        f"{why}; it must return a finite float, or a dict with a finite number under the "
        "objective key"
    )


def _quote(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _VALUE_CHARS else text[: _VALUE_CHARS - 3] + "..."


# ---------------------------------------------------------------- the estimator


class UserEstimator:
    """An AccuracyEstimator-compatible wrapper: ``score(arch, report=None) -> float``.

    ``last_values`` holds the extra metrics of the last call (a returned mapping's other
    numbers), as the built-in estimators hold their raw proxy values.
    """

    def __init__(
        self, cfg: FunctionEstimatorConfig, *, seed: int, has_fidelity: bool = False
    ) -> None:
        self.config = cfg
        self.name = cfg.function
        self.seed = seed
        self.fn = load_function(cfg)
        self.shape = check_signature(self.fn, cfg.function)
        if self.shape.fidelity_required and not has_fidelity:
            raise EstimatorFunctionError(
                f"estimator function {cfg.function} takes budget and report (a multi-fidelity "
                "estimator): the experiment needs a [fidelity] table with min_budget and "
                "max_budget"
            )
        if has_fidelity and not self.shape.takes_fidelity:
            raise EstimatorFunctionError(
                f"the experiment has a [fidelity] table but estimator function {cfg.function} "
                "takes no budget and report: add both parameters "
                "(FUNC(model, arch, budget, report)) or remove the table"
            )
        self.last_values: dict[str, float] = {}

    def score(self, arch: searchspace.Architecture, report: Reporter | None = None) -> float:
        torch.manual_seed(self.seed)  # equal architectures start from equal weights
        model = searchspace.build(arch)
        kwargs: dict[str, Any] = {}
        if self.shape.takes_fidelity and report is not None:
            kwargs = {"budget": report.max_budget, "report": self._reporter(report)}
        try:
            value = self.fn(model, arch, **kwargs)
        except (optuna.TrialPruned, EstimatorFunctionError):
            raise
        except Exception as e:
            raise EstimatorCallError(self.name, e) from e
        objective, self.last_values = objective_of(value, self.config.metric, self.name)
        return objective

    def _reporter(self, report: Reporter) -> Callable[[Any, float], None]:
        def wrapped(value: Any, step: float) -> None:
            objective, _ = objective_of(value, self.config.metric, self.name)
            report(objective, step)  # may raise optuna.TrialPruned: the trial stops here

        return wrapped

    def __repr__(self) -> str:
        return f"UserEstimator({self.name!r})"


def user_estimator(
    table: Mapping[str, Any], *, seed: int, has_fidelity: bool = False
) -> UserEstimator | None:
    """The user function of an (already validated) ``[estimator]`` table; None for a kind."""
    if "function" not in table:
        return None
    return UserEstimator(
        FunctionEstimatorConfig.from_dict(table), seed=seed, has_fidelity=has_fidelity
    )
