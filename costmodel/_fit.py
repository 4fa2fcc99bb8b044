"""Fitting a profile's latency parameters to measured times, through the latency model itself.

One function, ``fit_profile``: measured rows (single kernels and whole
networks with their seconds) and a base profile as the prior (its measured
ceilings, kept) -> a fitted profile. The fit runs the very roofline model the
cost model uses (``costmodel._latency``), so the fitted numbers mean what the
model means.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import statistics
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
from scipy.optimize import least_squares
from scipy.stats import spearmanr

from costmodel._formulas import count
from costmodel._kinds import latency_class
from costmodel._latency import FREE, FUSED, is_fused, network_fresh_bytes, roofline_time
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
    cold_start_s: float = 0.0  # what a kernel timed alone paid beyond the model (not written)


def blas_kernels() -> str:
    """The BLAS libraries loaded and the kernels each picked for this CPU.

    The fit's trust-region steps go through BLAS, and OpenBLAS picks its kernels by CPU
    (SkylakeX on AVX-512 Xeons, Haswell where it does not know the CPU), so the same
    measurements can fit to slightly different parameters under other kernels: a record
    of a fit names them. ``OPENBLAS_CORETYPE`` chooses them (set before numpy loads)."""
    from threadpoolctl import threadpool_info

    seen = [
        f"{i.get('internal_api', '?')} {i.get('version') or '?'} "
        f"({i.get('architecture') or '?'} kernels)"
        for i in threadpool_info()
        if i.get("user_api") == "blas"
    ]
    return ", ".join(dict.fromkeys(seen)) or "none loaded"


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
        "cold": (1e-6, 1e-9, 1e-4),
    }[kind]


def _data_start(
    names: Sequence[str],
    start: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    base: HardwareProfile,
    specs: Sequence[LayerSpec],
    times_s: Sequence[float],
    precision: str,
) -> np.ndarray:
    """Start each class's efficiencies where each alone explains its median benchmark.

    A class's compute efficiency starts at median(ops / (peak x time)) and its memory
    efficiency at median(bytes / (bandwidth x time)) over its benchmarks (clipped to
    the bounds), so both roofs bind at the start and the fit moves whichever explains
    how its times vary. From a fixed start of 0.5 a kernel whose time follows its
    arithmetic at a few percent of peak (a pooling window looped one output at a
    time) starts memory-bound, where its compute efficiency has no gradient, and
    stays there. In log units, as ``start``.
    """
    out = start.copy()
    peak, bw = base.peak(precision), base.bandwidth_bytes_per_s
    for i, name in enumerate(names):
        kind, _, cls = name.partition(":")
        if kind not in ("ce", "me"):
            continue
        ratios = []
        for spec, t in zip(specs, times_s, strict=True):
            if latency_class(spec, base.conv_dispatch, base.threads) != cls or t <= 0:
                continue
            c = count(spec)
            if kind == "ce":
                ratios.append((2 * c.macs + c.other_ops) / (peak * t))
            else:
                ratios.append(layer_mac_bytes(c, precision) / (bw * t))
        if ratios and statistics.median(ratios) > 0:
            out[i] = min(max(math.log(statistics.median(ratios)), lo[i]), hi[i])
    return out


def apply_params(
    base: HardwareProfile, names: Sequence[str], theta: Sequence[float], precision: str
) -> HardwareProfile:
    """A profile with fitted log-parameters ``theta`` (eager host costs, efficiencies, shape)."""
    vals = dict(zip(names, (math.exp(t) for t in theta), strict=True))
    hosts = {k.split(":")[1]: v for k, v in vals.items() if k.startswith("host:")}
    base_host = min(hosts.values()) if hosts else 0.0
    eager = base.runtime("eager")
    runtimes = dict(base.runtimes)
    # Every fitted class is written, a zero too: a class left out would take its
    # parent class's cost (hw_profiles.PARENT_CLASS).
    extra = {c: h - base_host for c, h in hosts.items()}
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


def _cold_s(names: Sequence[str], theta: np.ndarray) -> float:
    """The fitted cold-start seconds of a kernel timed alone (0 when not fitted)."""
    return math.exp(theta[names.index("cold")]) if "cold" in names else 0.0


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
    data_start: bool = True,
    cold_start: bool = False,
    hold: Sequence[str] = (),
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
    errors are reported), then refitted on all of them. ``data_start``: efficiencies
    start from the benchmarks (``_data_start``), else at 0.5. ``cold_start`` (with
    ``nets``): each benchmark also pays one fitted constant, ``cold_start_s``, that no
    network pays: a kernel timed alone among others runs with cold code and data and reads
    the clock around itself. The profile leaves it out, so the fixed cost per call comes
    from the networks, and the benchmarks still pin efficiencies and shape terms.
    Calibration does not use it: with op chains among the networks it did not make the
    development list's errors smaller (experiments/calibration_ablation.py).
    ``hold``: parameters kept at the base profile's value (e.g. "fault", the probed
    fresh-page cost).
    """
    names = [n for n in _fitted_names(base, specs) if n not in hold]
    if nets and cold_start:
        names.append("cold")
    columns = zip(*(_start_and_bounds(n.split(":")[0], base) for n in names), strict=True)
    start, lo, hi = (np.asarray([math.log(x) for x in column]) for column in columns)
    if data_start:
        start = _data_start(names, start, lo, hi, base, specs, times_s, precision)
    y = np.log(np.asarray(times_s, dtype=float))
    y_net = np.log(np.asarray([t for _, t in nets], dtype=float))
    net_pred = _net_predictor(base, nets, precision)

    def solve(idx: Sequence[int], net_idx: Sequence[int]) -> np.ndarray:
        sub = [specs[i] for i in idx]
        ys = y[list(idx)]
        yn = y_net[list(net_idx)]

        def resid(theta: np.ndarray) -> np.ndarray:
            hw = apply_params(base, names, theta, precision)
            cold = _cold_s(names, theta)
            r = np.log([predict_single(s, hw, precision) + cold for s in sub]) - ys
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
        cold = _cold_s(names, theta)
        errs = [abs((predict_single(specs[i], hw, precision) + cold) / times_s[i] - 1)
                for i in idx]  # fmt: skip
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
        cold_start_s=_cold_s(names, theta),
    )


# --- Whole networks measured by a user: a few physical parameters, the base profile as prior ---

# Efficiency groups tied so that ten networks identify them: each conv kind and
# linear alone (compute and memory share the value, as in the shipped profiles),
# one memory efficiency for the streaming ops (BN, activations, element-wise),
# the pooling kernels together. A class outside these is its own group.
EFFICIENCY_GROUPS: dict[str, tuple[str, ...]] = {
    "dense_conv": ("dense_conv",),
    "pointwise_conv": ("pointwise_conv",),
    "group_conv": ("group_conv",),
    "depthwise_conv": ("depthwise_conv",),
    "linear": ("linear",),
    "streaming": ("batchnorm", "activation", "elementwise"),
    "pooling": ("pooling", "max_pooling", "global_pooling"),
}
# Classes whose eager call costs the host more (algorithm choice, descriptor set-up).
HEAVY_HOST_CLASSES = frozenset(
    {"dense_conv", "pointwise_conv", "group_conv", "depthwise_conv", "linear", "native_conv"}
)
# Groups whose ops stream memory: their factor moves memory efficiency only.
MEMORY_GROUPS = frozenset({"streaming", "pooling"})
# Conv kinds whose compute and memory efficiencies are worth fitting apart (``split``).
# A 1x1 conv on NAS-Bench-201's small tensors is bound by memory, on MobileNet's wide
# ones by arithmetic in a GEMM whose reduction is as short as its input channels
# (roofline: Williams, Waterman, Patterson, CACM 2009), so one tied factor cannot fit
# both. PyTorch's fp32 CUDA depthwise kernel (aten/src/ATen/native/cuda/
# DepthwiseConv2d.cu, conv_depthwise2d_forward_kernel) has each thread accumulate one
# output over its k x k window straight from global memory / L1, so its time grows with
# k^2 at the same DRAM bytes: its compute efficiency sits far below its memory one.
SPLIT_GROUPS = frozenset({"pointwise_conv", "depthwise_conv"})
HOST_PARAMS = ("host_other_s", "host_conv_extra_s", "kernel_overhead_s")
_LOG_RANGE = math.log(1e3)  # no parameter moves more than 1000x from its prior


@dataclass(frozen=True)
class MeasuredNetwork:
    """One measured whole network: its layers, measured seconds and how it ran.

    ``extra_kernels``: kernels the framework launches beyond one per costed
    layer (PyTorch's eager h_swish runs 4); each costs one host call of a
    streaming op and one device kernel overhead.
    """

    specs: tuple[LayerSpec, ...]
    latency_s: float
    precision: str = "fp32"
    runtime: str = "eager"
    extra_kernels: int = 0


@dataclass(frozen=True)
class NetworkFit:
    profile: HardwareProfile
    parameters: dict[str, float]  # fitted value of each free parameter (s, or efficiency)
    prior: dict[str, float]  # the base profile's value of each
    predicted_s: tuple[float, ...]  # fitted profile, every row
    cv_predicted_s: tuple[float, ...]  # each row predicted by a fit that did not see it
    fit_mdape: float
    fit_spearman: float
    cv_mdape: float
    cv_spearman: float
    cv_folds: int
    # The conv / linear classes whose host extra host_conv_extra_s moved (``_moved_extras``).
    host_extra_classes: tuple[str, ...] = ()


def _group_of(cls: str) -> str:
    return next((g for g, members in EFFICIENCY_GROUPS.items() if cls in members), cls)


def _efficiency_prior(
    base: HardwareProfile, group: str, precision: str, side: str = "both"
) -> tuple[float, float]:
    """(prior value, largest factor keeping every member <= 1) of an efficiency group.

    ``side``: "memory" or "compute" for a factor that moves that efficiency
    alone, "both" for one that moves both.
    """
    members = EFFICIENCY_GROUPS.get(group, (group,))
    pairs = [base.efficiency(cls, precision) for cls in members]
    if side == "memory":
        effs = [m for _, m in pairs]
    elif side == "compute":
        effs = [c for c, _ in pairs]
    else:
        effs = [e for p in pairs for e in p]
    return effs[0], 1.0 / max(effs)


def _moved_extras(base: HardwareProfile, runtime: str, seen: Collection[str]) -> dict[str, float]:
    """The base's host extra of each conv / linear class ``host_conv_extra_s`` moves.

    A base that gives every such class one extra (a GPU's, where each is a
    cuDNN / cuBLAS call) or none (a datasheet) holds one parameter: the fit
    moves it for all of them. A base that tells them apart (a calibrated CPU,
    where native and oneDNN convs take different paths) moves only the classes
    the rows call (``seen``); the others keep the base's values, as every
    parameter the rows cannot see does.
    """
    rt = base.runtime(runtime)
    extras = {c: rt.class_extra_s(c) for c in sorted(HEAVY_HOST_CLASSES)}
    if len(set(extras.values())) == 1:
        return extras
    return {c: e for c, e in extras.items() if c in seen}


def _heavy_ratios(extras: dict[str, float]) -> dict[str, float]:
    """Each moved class's share of the fitted ``host_conv_extra_s``.

    One factor moves them all, so classes keep the base profile's ratios (a
    calibrated CPU's native conv call costs a fifth of its oneDNN one).
    """
    top = max(extras.values(), default=0.0)
    return {c: e / top if top > 0 else 1.0 for c, e in extras.items()}


def _host_prior(base: HardwareProfile, runtime: str, extras: dict[str, float]) -> dict[str, float]:
    rt = base.runtime(runtime)
    extra = max(extras.values(), default=0.0) or rt.host_overhead_s  # none: a call costs 2x
    return {
        "host_other_s": rt.host_overhead_s,
        "host_conv_extra_s": extra,
        "kernel_overhead_s": rt.kernel_overhead_s,
    }


@dataclass(frozen=True)
class _Layers:
    """A network's kernels as arrays at the base profile, for fast refits."""

    compute_s: np.ndarray
    memory_s: np.ndarray
    group: np.ndarray  # index into the fit's group list
    heavy: np.ndarray  # share of host_conv_extra_s the call pays (0 unless conv / linear)
    host_fixed_s: np.ndarray  # host cost no parameter moves: a streaming class's own extra
    device_fixed_s: np.ndarray  # device cost no parameter moves: page faults


def _base_layers(
    row: MeasuredNetwork,
    base: HardwareProfile,
    groups: list[str],
    scale: dict[str, tuple[float, float]],
    heavy_ratio: dict[str, float],
) -> _Layers:
    rt = base.runtime(row.runtime)
    c_s, m_s, g_i, heavy, host_fixed, dev_fixed = [], [], [], [], [], []
    counts = [count(s) for s in row.specs]
    layers = [(s, c, layer_mac_bytes(c, row.precision))
              for s, c in zip(row.specs, counts, strict=True)]  # fmt: skip
    fused = [is_fused(s, row.runtime, i > 0) for i, s in enumerate(row.specs)]
    fresh = network_fresh_bytes(layers, base, row.precision, fused)
    for (spec, c, b), u, f in zip(layers, fused, fresh, strict=True):
        t = roofline_time(spec, c, b, base, row.precision, row.runtime, fused=u, fresh=f)
        if t.bound in (FREE, FUSED):
            continue
        cls = latency_class(spec, base.conv_dispatch, base.threads)
        g = _group_of(cls)
        # Times at efficiency 1 of the group's prior values (factors then rescale them).
        c_s.append(t.compute_s * scale[g][0])
        m_s.append(t.memory_s * scale[g][1])
        g_i.append(groups.index(g))
        heavy.append(heavy_ratio.get(cls, 0.0))
        host_fixed.append(0.0 if cls in HEAVY_HOST_CLASSES else rt.class_extra_s(cls))
        # What roofline_time adds beyond the per-kernel and per-call costs (page faults).
        on_device = rt.kernel_overhead_s + (rt.host_s(cls) if base.device_type == "cpu" else 0.0)
        dev_fixed.append(max(t.overhead_s - on_device, 0.0))
    for _ in range(row.extra_kernels):
        c_s.append(0.0)
        m_s.append(0.0)
        g_i.append(groups.index("streaming") if "streaming" in groups else 0)
        heavy.append(0.0)
        host_fixed.append(rt.class_extra_s("elementwise"))
        dev_fixed.append(0.0)
    arrays = (c_s, m_s, g_i, heavy, host_fixed, dev_fixed)
    return _Layers(*(np.asarray(a, dtype=float) for a in arrays))


def _pipeline_s(host: np.ndarray, device: np.ndarray) -> float:
    """Network time of ``critical_path`` in closed form.

    end_i = max(H_i, end_{i-1}) + d_i with H the cumulative host time unrolls to
    end_n = D_n + max_j (H_j - D_{j-1}), D the cumulative device time.
    """
    h = np.cumsum(host)
    d = np.cumsum(device)
    d_prev = np.concatenate([[0.0], d[:-1]])
    return float(d[-1] + max(0.0, float(np.max(h - d_prev))))


class _Model:
    """Predicts measured networks from log-factors on the base profile's parameters."""

    def __init__(
        self,
        base: HardwareProfile,
        rows: Sequence[MeasuredNetwork],
        split: Collection[str] = (),
    ) -> None:
        precisions = {r.precision for r in rows}
        runtimes = {r.runtime for r in rows}
        if len(precisions) != 1 or len(runtimes) != 1:
            raise ValueError(
                f"fit one precision and runtime at a time: got precisions={sorted(precisions)}, "
                f"runtimes={sorted(runtimes)}"
            )
        self.base, self.rows = base, list(rows)
        self.precision, self.runtime = precisions.pop(), runtimes.pop()
        classes = {
            latency_class(s, base.conv_dispatch, base.threads)
            for r in rows
            for s in r.specs
            if not count(s).alias
        }
        self.groups = sorted({_group_of(c) for c in classes} | {"streaming"})
        self.split = [g for g in self.groups if g in split and g not in MEMORY_GROUPS]
        memory_side = set(self.split) | MEMORY_GROUPS
        eff = {
            f"efficiency_{g}": _efficiency_prior(
                base, g, self.precision, "memory" if g in memory_side else "both"
            )
            for g in self.groups
        }
        eff |= {
            f"compute_efficiency_{g}": _efficiency_prior(base, g, self.precision, "compute")
            for g in self.split
        }
        extras = _moved_extras(base, self.runtime, classes)
        self.prior = {
            **_host_prior(base, self.runtime, extras),
            **{k: v[0] for k, v in eff.items()},
        }
        self.names = list(self.prior)
        hi = [_LOG_RANGE] * len(HOST_PARAMS) + [math.log(v[1]) for v in eff.values()]
        self.bounds = (np.full(len(self.names), -_LOG_RANGE), np.asarray(hi) + 1e-12)
        self.heavy_host = bool(classes & HEAVY_HOST_CLASSES)
        scale = {g: (self._compute_prior(g), self.prior[f"efficiency_{g}"]) for g in self.groups}
        self.heavy_ratio = _heavy_ratios(extras)
        self.layers = [_base_layers(r, base, self.groups, scale, self.heavy_ratio) for r in rows]
        self.overlap = base.memory_compute_overlap
        self.cpu = base.device_type == "cpu"

    def _compute_name(self, g: str) -> str | None:
        """The parameter that moves group ``g``'s compute efficiency (None: nothing does)."""
        if g in MEMORY_GROUPS:
            return None
        return f"compute_efficiency_{g}" if g in self.split else f"efficiency_{g}"

    def _compute_prior(self, g: str) -> float:
        name = self._compute_name(g)
        return 1.0 if name is None else self.prior[name]

    def values(self, theta: np.ndarray) -> dict[str, float]:
        return {n: self.prior[n] * math.exp(t) for n, t in zip(self.names, theta, strict=True)}

    def _efficiencies(self, v: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
        """(compute, memory) efficiency of each group; 1.0 where compute is not fitted."""
        comp = [1.0 if (n := self._compute_name(g)) is None else v[n] for g in self.groups]
        return np.asarray(comp), np.asarray([v[f"efficiency_{g}"] for g in self.groups])

    def predict(self, theta: np.ndarray, idx: Sequence[int]) -> np.ndarray:
        v = self.values(theta)
        eff_c, eff_m = self._efficiencies(v)
        out = []
        for i in idx:
            lay = self.layers[i]
            g = lay.group.astype(int)
            c, m = lay.compute_s / eff_c[g], lay.memory_s / eff_m[g]
            roof = np.maximum(c, m) + (1.0 - self.overlap) * np.minimum(c, m)
            host = v["host_other_s"] + v["host_conv_extra_s"] * lay.heavy + lay.host_fixed_s
            dev = roof + v["kernel_overhead_s"] + lay.device_fixed_s
            out.append(float(np.sum(dev + host)) if self.cpu else _pipeline_s(host, dev))
        return np.asarray(out)

    def profile(self, theta: np.ndarray) -> HardwareProfile:
        """The base profile with the fitted values written in."""
        v = self.values(theta)
        base = self.base
        rt = base.runtime(self.runtime)
        extra = dict(rt.class_host_overhead_s)
        if self.heavy_host:
            extra.update({c: v["host_conv_extra_s"] * r for c, r in self.heavy_ratio.items()})
        runtimes = dict(base.runtimes)
        runtimes[self.runtime] = RuntimeParams(
            v["kernel_overhead_s"], v["host_other_s"], MappingProxyType(extra)
        )
        ce, me = _precision_tables(base, self.precision)
        for g in self.groups:
            # Members keep their ratios to the group's prior values.
            fm = v[f"efficiency_{g}"] / self.prior[f"efficiency_{g}"]
            name = self._compute_name(g)
            fc = None if name is None else v[name] / self.prior[name]
            for cls in EFFICIENCY_GROUPS.get(g, (g,)):
                c0, m0 = base.efficiency(cls, self.precision)
                me[0][cls] = min(m0 * fm, 1.0)
                if fc is not None:
                    ce[0][cls] = min(c0 * fc, 1.0)
        return dataclasses.replace(
            base,
            runtimes=MappingProxyType(runtimes),
            compute_efficiency=MappingProxyType(ce[1]),
            memory_efficiency=MappingProxyType(me[1]),
            compute_efficiency_by_precision=MappingProxyType(ce[2]),
            memory_efficiency_by_precision=MappingProxyType(me[2]),
        )


_Tables = tuple[dict[str, float], dict[str, float], dict[str, dict[str, float]]]


def _precision_tables(base: HardwareProfile, precision: str) -> tuple[_Tables, _Tables]:
    """Copies of the efficiency tables and the one a fit at ``precision`` writes into.

    A precision with its own table gets the fitted values there; otherwise the
    default table (which every precision without its own reads) does.
    """
    out = []
    for default, by_p in (
        (base.compute_efficiency, base.compute_efficiency_by_precision),
        (base.memory_efficiency, base.memory_efficiency_by_precision),
    ):
        d = dict(default)
        bp = {p: dict(t) for p, t in by_p.items()}
        target = bp[precision] if precision in bp else d
        out.append((target, d, bp))
    return out[0], out[1]


def _compute_ladder(model: _Model, group: str) -> list[float]:
    """Log-factors of ``group``'s compute efficiency to start from: 1, 1/2, 1/4, ...
    down to where its median layer binds on compute by a factor 4 (only 1 where it
    already does at the prior).

    A roofline max has no gradient on the side that does not bind, so a fit started
    memory-bound never finds a compute roof that fits better (OFA's depthwise convs:
    time grows with the kernel's k^2 taps, which only the compute side carries); and
    as layers cross the ridge one by one the cost has several local minima.
    """
    gi = model.groups.index(group)
    c = np.concatenate([lay.compute_s[lay.group == gi] for lay in model.layers])
    m = np.concatenate([lay.memory_s[lay.group == gi] for lay in model.layers])
    ratios = c[m > 0] / m[m > 0]
    if ratios.size == 0:
        return [0.0]
    eff_c, eff_m = model._efficiencies(model.prior)
    # Compute binds where eff_c < eff_m * compute_s / memory_s (both at efficiency 1).
    lowest = max(
        math.log(eff_m[gi] * float(np.median(ratios)) / (4.0 * eff_c[gi])), -_LOG_RANGE
    )  # no start below the parameter's bound
    steps = max(0, math.ceil(-lowest / math.log(2.0)))
    return [-j * math.log(2.0) for j in range(steps + 1)]


def _starts(model: _Model, free: np.ndarray) -> list[np.ndarray]:
    """Start points of the free parameters: every combination of the free split groups'
    compute-efficiency ladders (``_compute_ladder``), the prior first."""
    names = [n for n, f in zip(model.names, free, strict=True) if f]
    ladders = [
        (names.index(f"compute_efficiency_{g}"), _compute_ladder(model, g))
        for g in model.split
        if f"compute_efficiency_{g}" in names
    ]
    starts = []
    for combo in itertools.product(*(ladder for _, ladder in ladders)):
        x = np.zeros(len(names))
        for (i, _), t in zip(ladders, combo, strict=True):
            x[i] = t
        starts.append(x)
    return starts


def _solve(model: _Model, idx: Sequence[int], prior_weight: float, free: np.ndarray) -> np.ndarray:
    """Log-factors of every parameter; those not ``free`` (a mask) stay 0, at the prior.

    The least-cost solution over ``_starts``: the first one wins a tie.
    """
    y = np.log([model.rows[i].latency_s for i in idx])

    def full(sub: np.ndarray) -> np.ndarray:
        theta = np.zeros(len(model.names))
        theta[free] = sub
        return theta

    def resid(sub: np.ndarray) -> np.ndarray:
        r = np.log(model.predict(full(sub), idx)) - y
        return np.concatenate([r, prior_weight * sub])

    lo, hi = model.bounds[0][free], model.bounds[1][free]
    best = None
    for start in _starts(model, free):
        sol = least_squares(
            resid,
            np.clip(start, lo, hi),
            bounds=(lo, hi),
            x_scale=1.0,
            xtol=1e-12,
            ftol=1e-12,
            gtol=1e-12,
            max_nfev=2000,
        )
        if best is None or sol.cost < best.cost:
            best = sol
    assert best is not None  # _starts always holds the prior
    return full(best.x)


def _mdape(pred: Sequence[float], meas: Sequence[float]) -> float:
    return float(statistics.median(abs(p / m - 1) for p, m in zip(pred, meas, strict=True)))


def _spearman(pred: Sequence[float], meas: Sequence[float]) -> float:
    # Undefined below three rows or when either side is constant (no order to correlate).
    if len(pred) < 3 or len(set(pred)) < 2 or len(set(meas)) < 2:
        return float("nan")
    return float(spearmanr(pred, meas).statistic)


def fit_networks(
    base: HardwareProfile,
    rows: Sequence[MeasuredNetwork],
    *,
    prior_weight: float = 0.05,
    folds: int = 10,
    free: Collection[str] | None = None,
    split: Collection[str] = (),
) -> NetworkFit:
    """Fit host, device and efficiency parameters of ``base`` to measured networks.

    Regularised least squares in log space: residuals log(predicted / measured)
    of every row plus ``prior_weight`` x log(value / prior value) of every free
    parameter, so that a parameter the rows cannot identify stays at the base
    profile's value and ten rows suffice. Free: the eager host cost per call of
    a streaming op and the extra of a conv / linear call (``_moved_extras``
    says which classes it moves; a class's own host cost that is not a
    parameter, and page faults, stay fixed), the device cost per
    kernel, and one efficiency per group in ``EFFICIENCY_GROUPS`` present in
    the rows, bounded so no efficiency exceeds 1. Ceilings (peak, bandwidth)
    stay as in ``base``. Cross-validation: ``min(folds, n)`` folds by row
    (leave-one-out up to ``folds`` rows), each row predicted by a fit without it.
    ``free``: fit only these parameters (names as in ``NetworkFit.parameters``),
    the others stay at the base profile's values; None fits all of them.
    ``split``: groups (keys of ``EFFICIENCY_GROUPS``) whose compute efficiency
    is a parameter of its own, ``compute_efficiency_<group>``, apart from the
    memory efficiency ``efficiency_<group>`` (see ``SPLIT_GROUPS``); the fit
    starts it from a ladder down past the roofline's ridge (``_starts``) and keeps
    the least-cost solution.
    """
    if len(rows) < 2:
        raise ValueError(f"fit needs at least 2 measured networks, got {len(rows)}")
    bad = [i for i, r in enumerate(rows) if not (r.latency_s > 0 and math.isfinite(r.latency_s))]
    if bad:
        raise ValueError(f"rows {bad} have latency_s <= 0 or not finite")
    unknown_groups = sorted(set(split) - set(EFFICIENCY_GROUPS))
    if unknown_groups:
        raise ValueError(
            f"split={sorted(split)}: {unknown_groups} not among {list(EFFICIENCY_GROUPS)}"
        )
    model = _Model(base, rows, split)
    if free is None:
        mask = np.ones(len(model.names), dtype=bool)
    else:
        unknown = sorted(set(free) - set(model.names))
        if unknown or not free:
            raise ValueError(
                f"free={sorted(free)} must name at least one of these rows' parameters "
                f"{model.names}; unknown: {unknown}"
            )
        mask = np.asarray([name in free for name in model.names])
    n = len(rows)
    theta = _solve(model, range(n), prior_weight, mask)
    pred = model.predict(theta, range(n))
    k = min(folds, n)
    cv = np.zeros(n)
    for f in range(k):
        held = [i for i in range(n) if i % k == f]
        train = [i for i in range(n) if i % k != f]
        cv[held] = model.predict(_solve(model, train, prior_weight, mask), held)
    meas = [r.latency_s for r in rows]
    return NetworkFit(
        profile=model.profile(theta),
        parameters=model.values(theta),
        prior=dict(model.prior),
        predicted_s=tuple(float(p) for p in pred),
        cv_predicted_s=tuple(float(p) for p in cv),
        fit_mdape=_mdape(pred, meas),
        fit_spearman=_spearman(pred, meas),
        cv_mdape=_mdape(cv, meas),
        cv_spearman=_spearman(cv, meas),
        cv_folds=k,
        host_extra_classes=tuple(model.heavy_ratio) if model.heavy_host else (),
    )


def predict_networks(hw: HardwareProfile, rows: Sequence[MeasuredNetwork]) -> list[float]:
    """Predicted seconds of each row under ``hw``: the fit's own model at the profile's values.

    Equals ``analyze(...).total.latency_s`` for a row without ``extra_kernels``.
    """
    model = _Model(hw, rows)
    return [float(t) for t in model.predict(np.zeros(len(model.names)), range(len(rows)))]
