"""Fitting a profile's latency parameters to measured times, through the latency model itself.

One function, ``fit_profile``: measured rows (single kernels and whole
networks with their seconds) and a base profile as the prior (its measured
ceilings, kept) -> a fitted profile. The fit runs the very roofline model the
cost model uses (``costmodel._latency``), so the fitted numbers mean what the
model means.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
from scipy.optimize import least_squares

from costmodel._formulas import count
from costmodel._kinds import latency_class
from costmodel._latency import roofline_time
from costmodel._report import analyze, layer_mac_bytes
from costmodel._spec import LayerSpec
from hw_profiles import KERNEL_CLASSES, HardwareProfile, RuntimeParams

# A whole network's rows: its layers in order and its measured seconds.
NetworkRow = tuple[Sequence[LayerSpec], float]


@dataclass(frozen=True)
class FitResult:
    profile: HardwareProfile
    fit_median_abs_error: float
    holdout_median_abs_error: float
    n_fit: int
    n_holdout: int
    network_fit_median_abs_error: float = float("nan")
    network_holdout_median_abs_error: float = float("nan")
    n_networks: int = 0


def _param_names(classes: Sequence[str]) -> list[str]:
    names = [f"host:{c}" for c in classes]
    names += [f"ce:{c}" for c in classes]
    names += [f"me:{c}" for c in classes]
    return [*names, "sat_out", "sat_red", "sat_oc", "cache", "cache_p", "fault", "overlap"]


def _start_and_bounds(kind: str, base: HardwareProfile) -> tuple[float, float, float]:
    """(start, lower bound, upper bound) of a parameter kind, in natural units."""
    return {
        "host": (5e-6, 1e-8, 1e-2),
        "ce": (0.5, 1e-3, 1.0),
        "me": (0.5, 1e-3, 1.0),
        "sat_out": (1e3, 1e-2, 1e8),
        "sat_red": (16.0, 1e-2, 1e5),
        "sat_oc": (4.0, 1e-2, 1e4),
        "cache": (max(base.cache_bytes, 1 << 20) / 4, 1 << 16, 1 << 28),
        "cache_p": (2.0, 0.5, 8.0),
        "fault": (max(base.page_fault_s_per_byte, 1e-12), 1e-14, 1e-8),
        "overlap": (0.5, 1e-3, 1.0),
    }[kind]


def apply_params(
    base: HardwareProfile, names: Sequence[str], theta: Sequence[float], precision: str
) -> HardwareProfile:
    """A profile with fitted log-parameters ``theta`` (eager host costs, efficiencies, shape)."""
    vals = dict(zip(names, (math.exp(t) for t in theta), strict=True))
    hosts = {k.split(":")[1]: v for k, v in vals.items() if k.startswith("host:")}
    base_host = min(hosts.values()) if hosts else 0.0
    eager = base.runtime("eager")
    runtimes = dict(base.runtimes)
    extra = {c: h - base_host for c, h in hosts.items() if h - base_host > 0}
    runtimes["eager"] = RuntimeParams(eager.kernel_overhead_s, base_host, MappingProxyType(extra))
    ce = dict(base.compute_efficiency)
    me = dict(base.memory_efficiency)
    for k, v in vals.items():
        kind, _, cls = k.partition(":")
        if kind == "ce":
            ce[cls] = min(v, 1.0)
        elif kind == "me":
            me[cls] = min(v, 1.0)
    return dataclasses.replace(
        base,
        runtimes=MappingProxyType(runtimes),
        compute_efficiency=MappingProxyType(ce),
        memory_efficiency=MappingProxyType(me),
        saturation_output_elements=vals.get("sat_out", base.saturation_output_elements),
        saturation_reduction_elements=vals.get("sat_red", base.saturation_reduction_elements),
        saturation_output_channels=vals.get("sat_oc", base.saturation_output_channels),
        cache_bytes=int(vals["cache"]) if "cache" in vals else base.cache_bytes,
        cache_falloff_exponent=vals.get("cache_p", base.cache_falloff_exponent),
        page_fault_s_per_byte=vals.get("fault", base.page_fault_s_per_byte),
        memory_compute_overlap=min(vals.get("overlap", base.memory_compute_overlap), 1.0),
    )


def predict_single(
    spec: LayerSpec, hw: HardwareProfile, precision: str, runtime: str = "eager"
) -> float:
    """Predicted seconds per call of one layer run back to back (a micro-benchmark)."""
    c = count(spec)
    t = roofline_time(spec, c, layer_mac_bytes(c, precision), hw, precision, runtime)
    # Back-to-back calls pipeline host and device on an accelerator.
    return max(t.host_s, t.device_s)


def _net_predictor(
    hw: HardwareProfile, nets: Sequence[NetworkRow], precision: str
) -> Callable[[HardwareProfile], list[float]]:
    """Fast whole-network latency under a changing profile (CPU: the plain sum of layers)."""
    if hw.device_type != "cpu":
        return lambda h: [
            analyze(list(sp), h, precision, "eager").total.latency_s for sp, _ in nets
        ]
    uniq: dict[LayerSpec, int] = {}
    members: list[list[int]] = []
    for specs, _ in nets:
        members.append([uniq.setdefault(sp, len(uniq)) for sp in specs if not count(sp).alias])
    layers = list(uniq)

    def predict(h: HardwareProfile) -> list[float]:
        t = [predict_single(sp, h, precision) for sp in layers]
        return [sum(t[k] for k in m) for m in members]

    return predict


def _fitted_names(base: HardwareProfile, specs: Sequence[LayerSpec]) -> list[str]:
    """The parameters to fit: those the data and the base profile can identify."""
    classes = sorted(
        {latency_class(s, base.conv_dispatch, base.threads) for s in specs},
        key=KERNEL_CLASSES.index,
    )
    names = _param_names(classes)
    if base.device_type != "cpu" or not base.cache_bandwidth_bytes_per_s:
        # A GPU keeps its datasheet L2 size and the step between L2 and DRAM.
        names = [n for n in names if n not in ("cache", "cache_p")]
    if base.page_fault_s_per_byte <= 0:  # not measured: no fresh-page term to refine
        names = [n for n in names if n != "fault"]
    return names


def _split(n: int, holdout_every: int) -> tuple[list[int], list[int]]:
    held = [i for i in range(n) if i % holdout_every == holdout_every - 1]
    return [i for i in range(n) if i not in set(held)], held


def fit_profile(
    base: HardwareProfile,
    specs: Sequence[LayerSpec],
    times_s: Sequence[float],
    precision: str = "fp32",
    *,
    nets: Sequence[NetworkRow] = (),
    net_weight: float = 6.0,
    holdout_every: int = 4,
) -> FitResult:
    """Least squares on log time (robust soft-L1 loss) through the latency model.

    Fitted: eager host cost per kernel class, compute and memory efficiency per
    class, the saturation constants, the effective cache size and its fall-off,
    the fresh-page cost and the compute / memory overlap. Ceilings (peak,
    bandwidths) stay as measured. The data: single-kernel benchmarks
    (``specs``, ``times_s``) and, when given, whole networks (``nets``: layer
    specs and measured seconds, residuals weighted by ``net_weight``), whose
    time the model predicts as the composition of its per-layer times. First
    fitted with every ``holdout_every``-th benchmark and network held out (their
    errors are reported), then refitted on all of them.
    """
    names = _fitted_names(base, specs)
    columns = zip(*(_start_and_bounds(n.split(":")[0], base) for n in names), strict=True)
    start, lo, hi = (np.asarray([math.log(x) for x in column]) for column in columns)
    y = np.log(np.asarray(times_s, dtype=float))
    y_net = np.log(np.asarray([t for _, t in nets], dtype=float))
    net_pred = _net_predictor(base, nets, precision)

    def solve(idx: Sequence[int], net_idx: Sequence[int]) -> np.ndarray:
        sub = [specs[i] for i in idx]
        ys = y[list(idx)]
        yn = y_net[list(net_idx)]

        def resid(theta: np.ndarray) -> np.ndarray:
            hw = apply_params(base, names, theta, precision)
            r = np.log([predict_single(s, hw, precision) for s in sub]) - ys
            if len(net_idx):
                pn = np.log(net_pred(hw))[list(net_idx)]
                r = np.concatenate([r, net_weight * (pn - yn)])
            return r

        r = least_squares(
            resid, start, bounds=(lo, hi), loss="soft_l1", f_scale=0.1, diff_step=1e-3, max_nfev=400
        )
        return r.x

    def mape(theta: np.ndarray, idx: Sequence[int]) -> float:
        hw = apply_params(base, names, theta, precision)
        errs = [abs(predict_single(specs[i], hw, precision) / times_s[i] - 1) for i in idx]
        return float(statistics.median(errs)) if errs else float("nan")

    def net_mape(theta: np.ndarray, idx: Sequence[int]) -> float:
        if not idx:
            return float("nan")
        pred = net_pred(apply_params(base, names, theta, precision))
        return float(statistics.median(abs(pred[i] / nets[i][1] - 1) for i in idx))

    train, held = _split(len(specs), holdout_every)
    net_train, net_held = _split(len(nets), holdout_every)
    theta_train = solve(train, net_train)
    holdout, net_holdout = mape(theta_train, held), net_mape(theta_train, net_held)
    all_idx, all_nets = list(range(len(specs))), list(range(len(nets)))
    theta = solve(all_idx, all_nets)
    return FitResult(
        profile=apply_params(base, names, theta, precision),
        fit_median_abs_error=mape(theta, all_idx),
        holdout_median_abs_error=holdout,
        n_fit=len(all_idx),
        n_holdout=len(held),
        network_fit_median_abs_error=net_mape(theta, all_nets),
        network_holdout_median_abs_error=net_holdout,
        n_networks=len(nets),
    )
