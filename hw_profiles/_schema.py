"""Hardware profiles: the schema, validation and loading of the TOML data files.

A profile is data, not code: one TOML file per device under ``hw_profiles/data``
(or anywhere on disk for a user's own device). Every numeric key carries its
unit in its name; unknown keys, keys without units and a missing ``source``
are rejected at load time, naming the key and the file.
"""

from __future__ import annotations

import difflib
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from hw_profiles._precision import PRECISIONS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

RUNTIMES = ("eager", "graph", "fused")
DEVICE_TYPES = ("gpu", "cpu", "soc")

# Kernel classes that reach different fractions of the roofline (PALEO's "platform
# percent of peak", Qi et al., ICLR 2017): with PyTorch 2.11 and cuDNN on a Hopper-class
# GPU, large dense 3x3 convs reached about 0.65 of the fp32 roofline, depthwise ones 0.18.
KERNEL_CLASSES = (
    "dense_conv",
    "pointwise_conv",
    "group_conv",
    "depthwise_conv",
    "linear",
    "batchnorm",
    "activation",
    "elementwise",
    # Pooling runs as three different kernels. PyTorch's CPU kernels for NCHW tensors
    # (aten/src/ATen/native/cpu/AvgPoolKernel.cpp, MaxPoolKernel.cpp) loop over output
    # windows one element at a time: each output pays its window's index arithmetic,
    # its kh*kw reads and a divide (average) or NaN-aware compare (max), so their time
    # follows the window work, not the bytes moved (a 3x3 stride-1 window does 4x
    # the work per byte of a stride-2 one). Global average pooling is a vectorised
    # sum over each contiguous plane and streams at memory speed. Measured on the
    # development VM at batch 32: about 8 ns per output of an average 3x3 window,
    # 22-50 ns of a max 3x3 window, 0.1 ns per input element of a global pool.
    "pooling",  # windowed average pooling
    "max_pooling",
    "global_pooling",
    # PyTorch's own CPU convolution (im2col + GEMM, ``_slow_conv2d_forward``),
    # which it picks over oneDNN for small single-image convs; only profiles with
    # ``conv_dispatch = "pytorch_cpu"`` use it (costmodel/_kinds.py).
    "native_conv",
)
# A class a profile sets no value for takes its parent's value (efficiencies and the
# per-class host cost): profiles written before the pooling kernels were told apart
# keep pricing every pooling layer as "pooling".
PARENT_CLASS: Mapping[str, str] = MappingProxyType(
    {"max_pooling": "pooling", "global_pooling": "pooling"}
)


def _lookup_chain(kernel_class: str) -> tuple[str, ...]:
    """The class, then its parent (if it has one)."""
    parent = PARENT_CLASS.get(kernel_class)
    return (kernel_class,) if parent is None else (kernel_class, parent)


# How a profile's runtime picks a convolution algorithm: "none" (one class per
# conv kind) or "pytorch_cpu" (PyTorch's CPU dispatch between oneDNN and native).
CONV_DISPATCH = ("none", "pytorch_cpu")
# How a kernel's memory time uses the cache (costmodel._latency.memory_time_s):
# "blend": its class efficiency scales one bandwidth, the cache's and DRAM's blended by
# the share of traffic the cache serves; "ceilings": its class efficiency scales the
# cache bandwidth (the rate the kernel itself streams at) and DRAM caps the traffic
# that misses (a hierarchical roofline).
CACHE_MODELS = ("blend", "ceilings")

DATA_DIR = Path(__file__).with_name("data")


class ProfileError(ValueError):
    """A hardware profile file or value that cannot be used."""


@dataclass(frozen=True)
class RuntimeParams:
    """Fixed costs of running one kernel under a runtime.

    ``kernel_overhead_s``: device-side cost per kernel (launch, tail, sync).
    ``host_overhead_s``: host-side cost per op call (framework dispatch); on an
    accelerator it overlaps with device work, on a CPU it adds to it.
    """

    kernel_overhead_s: float
    host_overhead_s: float = 0.0
    # Extra host cost per call of a kernel class on top of ``host_overhead_s``
    # (e.g. a CPU conv sets up its algorithm, an element-wise op does not).
    class_host_overhead_s: Mapping[str, float] = field(default_factory=dict)

    def class_extra_s(self, kernel_class: str) -> float:
        """What a call of ``kernel_class`` costs the host beyond ``host_overhead_s``.

        Looked up for the class, then its parent (``PARENT_CLASS``); 0 when unset.
        """
        return next(
            (
                self.class_host_overhead_s[c]
                for c in _lookup_chain(kernel_class)
                if c in self.class_host_overhead_s
            ),
            0.0,
        )

    def host_s(self, kernel_class: str) -> float:
        return self.host_overhead_s + self.class_extra_s(kernel_class)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "kernel_overhead_s": self.kernel_overhead_s,
            "host_overhead_s": self.host_overhead_s,
        }
        if self.class_host_overhead_s:
            d["class_host_overhead_s"] = dict(self.class_host_overhead_s)
        return d


# eq=False: profiles hash by identity, so costs can be cached per loaded profile.
@dataclass(frozen=True, eq=False)
class HardwareProfile:
    name: str
    source: str
    device_type: str
    bandwidth_bytes_per_s: float
    memory_bytes: int
    peak_ops_per_s: Mapping[str, float]
    runtimes: Mapping[str, RuntimeParams]
    display_name: str = ""
    notes: str = ""
    cache_bytes: int = 0
    # Fraction of peak compute / bandwidth a large kernel of each class reaches;
    # precision-specific values override the defaults.
    compute_efficiency: Mapping[str, float] = field(default_factory=dict)
    memory_efficiency: Mapping[str, float] = field(default_factory=dict)
    compute_efficiency_by_precision: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    memory_efficiency_by_precision: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    # Shape dependence (costmodel/_latency.py); the defaults switch each term off.
    # A kernel whose working set (mac bytes) fits in ``cache_bytes`` moves at this rate.
    cache_bandwidth_bytes_per_s: float = 0.0
    # Output elements at which a kernel reaches half its large-kernel compute
    # efficiency (too little parallel work to fill the device): W / (W + W_half).
    saturation_output_elements: float = 0.0
    # Reduction length (MACs per output element) at which a conv / linear kernel
    # reaches half its compute efficiency: K / (K + K_half).
    saturation_reduction_elements: float = 0.0
    # Output channels per group at which a conv (not depthwise) / linear kernel
    # reaches half its compute efficiency: N / (N + N_half), a GEMM's narrow side.
    saturation_output_channels: float = 0.0
    # 0: a working set up to ``cache_bytes`` moves at the cache's bandwidth, a larger
    # one at DRAM's (a step). p > 0: a share 1 / (1 + (bytes / cache_bytes)^p) of
    # the traffic hits the cache (a smooth fall-off, fitted by CPU calibration).
    cache_falloff_exponent: float = 0.0
    # SIMD lanes of a CPU at fp32 (8 with AVX2, 16 with AVX-512): oneDNN blocks
    # channels by this width, so a GEMM-like conv / linear uses only c / (ceil(c /
    # lanes) * lanes) of each vector, for its input and for its output channels
    # per group. 0: off (GPUs: ``unaligned_channels_efficiency`` instead).
    simd_lanes: float = 0.0
    # A CPU framework without a caching allocator mallocs every tensor; one of
    # ``mmap_threshold_bytes`` or more is freshly mapped on every call, smaller ones
    # come from a heap that glibc trims once twice that lies free at its top, and
    # every page written for the first time faults: ``page_fault_s_per_byte`` per
    # such byte (costmodel._allocator simulates which). glibc: M_MMAP_THRESHOLD rises
    # dynamically to at most 32 MiB on 64-bit, M_TRIM_THRESHOLD to twice it
    # (mallopt(3)). 0: off (GPU caching allocators reuse memory).
    mmap_threshold_bytes: float = 0.0
    page_fault_s_per_byte: float = 0.0
    # Output elements one full wave of the device computes; work is rounded up
    # to whole waves (wave quantisation). 0: off.
    wave_output_elements: float = 0.0
    # Compute efficiency factor for a conv / linear whose channels are not a
    # multiple of 8 at a tensor-core precision (fp16, bf16, int8, int4).
    unaligned_channels_efficiency: float = 1.0
    # Fraction of the shorter of compute and memory time hidden under the longer:
    # 1 is the roofline's max(compute, memory), 0 their sum (no overlap).
    memory_compute_overlap: float = 1.0
    # Algorithm choice for convolutions (CONV_DISPATCH) and the CPU threads the
    # profile describes (PyTorch's dispatch depends on them).
    conv_dispatch: str = "none"
    threads: int = 1
    # How memory time uses the cache (CACHE_MODELS).
    cache_model: str = "blend"
    path: str = ""

    def peak(self, precision: str) -> float:
        try:
            return self.peak_ops_per_s[precision]
        except KeyError:
            raise ProfileError(
                f"profile {self.name!r} has no peak for precision={precision!r}; "
                f"it has {sorted(self.peak_ops_per_s)}"
            ) from None

    def runtime(self, runtime: str) -> RuntimeParams:
        try:
            return self.runtimes[runtime]
        except KeyError:
            raise ProfileError(
                f"runtime={runtime!r} is not one of {list(RUNTIMES)} (profile {self.name!r})"
            ) from None

    def efficiency(self, kernel_class: str, precision: str) -> tuple[float, float]:
        """(compute, memory) efficiency of a kernel class at a precision.

        Looked up for the precision, then in the default table, first for the class,
        then for its parent (``PARENT_CLASS``); 1.0 when none is set.
        """

        def find(default: Mapping[str, float], by_p: Mapping[str, Mapping[str, float]]) -> float:
            own = by_p.get(precision, {})
            for cls in _lookup_chain(kernel_class):
                for table in (own, default):
                    if cls in table:
                        return table[cls]
            return 1.0

        return (
            find(self.compute_efficiency, self.compute_efficiency_by_precision),
            find(self.memory_efficiency, self.memory_efficiency_by_precision),
        )

    def ridge_point(self, precision: str) -> float:
        """Arithmetic intensity (ops/byte) where the roofline turns flat."""
        return self.peak(precision) / self.bandwidth_bytes_per_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "display_name": self.display_name,
            "device_type": self.device_type,
            "source": self.source,
            "notes": self.notes,
            "memory_bytes": self.memory_bytes,
            "bandwidth_bytes_per_s": self.bandwidth_bytes_per_s,
            "cache_bytes": self.cache_bytes,
            "peak_ops_per_s": dict(self.peak_ops_per_s),
            "runtime": {k: v.to_dict() for k, v in self.runtimes.items()},
            "compute_efficiency": {
                **self.compute_efficiency,
                **{p: dict(v) for p, v in self.compute_efficiency_by_precision.items()},
            },
            "memory_efficiency": {
                **self.memory_efficiency,
                **{p: dict(v) for p, v in self.memory_efficiency_by_precision.items()},
            },
            **{k: getattr(self, k) for k in SHAPE_KEYS},
            "conv_dispatch": self.conv_dispatch,
            "threads": self.threads,
            "cache_model": self.cache_model,
        }


# Default per-kernel costs when a profile omits a runtime (documented in README):
# a tiny GPU kernel cost ~11 us launched eagerly from Python and ~1 us replayed from a
# CUDA graph (PyTorch 2.11 on a Hopper-class GPU); fused deployment runtimes launch
# fewer, similar kernels.
_DEFAULT_RUNTIMES: dict[str, dict[str, RuntimeParams]] = {
    "gpu": {
        "eager": RuntimeParams(kernel_overhead_s=3e-6, host_overhead_s=11e-6),
        "graph": RuntimeParams(kernel_overhead_s=1e-6),
        "fused": RuntimeParams(kernel_overhead_s=1e-6),
    },
    "soc": {
        "eager": RuntimeParams(kernel_overhead_s=5e-6, host_overhead_s=30e-6),
        "graph": RuntimeParams(kernel_overhead_s=2e-6),
        "fused": RuntimeParams(kernel_overhead_s=2e-6),
    },
    "cpu": {
        "eager": RuntimeParams(kernel_overhead_s=0.0, host_overhead_s=8e-6),
        "graph": RuntimeParams(kernel_overhead_s=0.0, host_overhead_s=3e-6),
        "fused": RuntimeParams(kernel_overhead_s=0.0, host_overhead_s=3e-6),
    },
}

# Shape-dependence keys (all optional; defaults switch the term off) and their
# defaults. ``unaligned_channels_efficiency`` is a fraction in (0, 1],
# ``memory_compute_overlap`` one in [0, 1].
SHAPE_KEYS: dict[str, float] = {
    "cache_bandwidth_bytes_per_s": 0.0,
    "saturation_output_elements": 0.0,
    "saturation_reduction_elements": 0.0,
    "saturation_output_channels": 0.0,
    "cache_falloff_exponent": 0.0,
    "simd_lanes": 0.0,
    "mmap_threshold_bytes": 0.0,
    "page_fault_s_per_byte": 0.0,
    "wave_output_elements": 0.0,
    "unaligned_channels_efficiency": 1.0,
    "memory_compute_overlap": 1.0,
}

_TOP_KEYS = {
    "name": str,
    "display_name": str,
    "source": str,
    "device_type": str,
    "notes": str,
    "memory_bytes": int,
    "bandwidth_bytes_per_s": float,
    "cache_bytes": int,
    "peak_ops_per_s": dict,
    "runtime": dict,
    "compute_efficiency": dict,
    "memory_efficiency": dict,
    "calibration": dict,
    "fit": dict,
    "rescale": dict,
    "conv_dispatch": str,
    "threads": int,
    "cache_model": str,
    **{k: float for k in SHAPE_KEYS},
}
_REQUIRED = (
    "name",
    "source",
    "device_type",
    "memory_bytes",
    "bandwidth_bytes_per_s",
    "peak_ops_per_s",
)
_RUNTIME_KEYS = {"kernel_overhead_s", "host_overhead_s", "class_host_overhead_s"}
_CALIBRATION_KEYS = {
    "date",
    "device",
    "host",
    "torch_version",
    "method",
    "validation",
    "threads",
    "duration_s",
    "benchmarks",
    "fit_median_abs_error",
    "holdout_median_abs_error",
    "networks",
    "op_chains",
    "network_fit_median_abs_error",
    # Written by a calibration that fitted the cold-start constant of lone kernels (a method
    # tried and recorded under experiments/results/, not calibrate's default).
    "benchmark_cold_start_s",
    "network_holdout_median_abs_error",
    "reference_arch",
    "reference_s",
    "allocator",
    # The BLAS kernels the fit ran on: other kernels can fit the same timings a little apart.
    "blas",
}

# What ``python -m hw_profiles fit`` records about the measurements it fitted.
_FIT_KEYS = {
    "base",
    "measurements",
    "sha256",
    "rows",
    "refused_rows",
    "date",
    "precision",
    "runtime",
    "parameters",
    "prior",
    "fit_mdape",
    "fit_spearman",
    "cv_mdape",
    "cv_spearman",
    "cv_folds",
}

# What ``python -m hw_profiles rescale`` records: the profile it scaled, the networks it
# timed, the factors fitted to them and the errors before and after. The streaming factors
# are there when BatchNorms, activations, adds and pools were given factors of their own.
_RESCALE_KEYS = {
    "base",
    "sha256",
    "date",
    "device",
    "host",
    "networks",
    "overhead_factor",
    "throughput_factor",
    "streaming_overhead_factor",
    "streaming_throughput_factor",
    "median_abs_error_before",
    "median_abs_error_after",
    "reference_then_s",
    "reference_now_s",
    "applied",
    # Written by the first rescale, which fitted the reference network alone (a method tried
    # and recorded under experiments/results/, replaced by several networks).
    "reference_arch",
    "fitted_ratio",
}


def _unknown(key: str, allowed: Any, where: str) -> ProfileError:
    hint = difflib.get_close_matches(key, list(allowed), n=1)
    extra = f"; did you mean {hint[0]!r}?" if hint else ""
    return ProfileError(
        f"{where}: unknown key {key!r} (allowed: {sorted(allowed)}){extra}. "
        "Numeric keys carry their unit in the name, e.g. bandwidth_bytes_per_s."
    )


def _number(value: Any, key: str, where: str, *, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ProfileError(f"{where}: {key}={value!r} must be a finite number")
    if (positive and value <= 0) or value < 0:
        raise ProfileError(f"{where}: {key}={value!r} must be {'> 0' if positive else '>= 0'}")
    return float(value)


def _efficiency_table(
    table: Any, key: str, where: str
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    if not isinstance(table, dict):
        raise ProfileError(f"{where}: [{key}] must be a table")
    default: dict[str, float] = {}
    by_precision: dict[str, dict[str, float]] = {}
    nested = "." in key  # inside [key.<precision>]: kernel classes only
    for k, v in table.items():
        if k in PRECISIONS and not nested:
            if not isinstance(v, dict):
                raise ProfileError(f"{where}: [{key}.{k}] must be a table of kernel classes")
            sub, _ = _efficiency_table(v, f"{key}.{k}", where)
            by_precision[k] = sub
        elif k in KERNEL_CLASSES:
            eff = _number(v, f"{key}.{k}", where)
            if eff > 1.0:
                raise ProfileError(f"{where}: {key}.{k}={v!r} must be a fraction in (0, 1]")
            default[k] = eff
        else:
            allowed = KERNEL_CLASSES if nested else KERNEL_CLASSES + PRECISIONS
            raise _unknown(k, allowed, f"{where} [{key}]")
    return default, by_precision


def parse_profile(data: Mapping[str, Any], where: str = "<profile>") -> HardwareProfile:
    """Validate a decoded TOML document and build a profile; errors name key and value."""
    for key, value in data.items():
        if key not in _TOP_KEYS:
            raise _unknown(key, _TOP_KEYS, where)
        want = _TOP_KEYS[key]
        if want is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        else:
            ok = isinstance(value, want)
        if want is int and isinstance(value, float) and value.is_integer():
            ok = True
        if not ok:
            raise ProfileError(f"{where}: {key}={value!r} must be of type {want.__name__}")
    for key in _REQUIRED:
        if key not in data:
            raise ProfileError(f"{where}: missing required key {key!r}")
    if not data["source"].strip():
        raise ProfileError(f"{where}: source must say where the figures come from")
    device_type = data["device_type"]
    if device_type not in DEVICE_TYPES:
        raise ProfileError(
            f"{where}: device_type={device_type!r} is not one of {list(DEVICE_TYPES)}"
        )

    peaks: dict[str, float] = {}
    for k, v in data["peak_ops_per_s"].items():
        if k not in PRECISIONS:
            raise _unknown(k, PRECISIONS, f"{where} [peak_ops_per_s]")
        peaks[k] = _number(v, f"peak_ops_per_s.{k}", where)
    if "fp32" not in peaks:
        raise ProfileError(f"{where}: peak_ops_per_s.fp32 is required")

    runtimes = dict(_DEFAULT_RUNTIMES[device_type])
    for rt, table in data.get("runtime", {}).items():
        if rt not in RUNTIMES:
            raise _unknown(rt, RUNTIMES, f"{where} [runtime]")
        if not isinstance(table, dict):
            raise ProfileError(f"{where}: [runtime.{rt}] must be a table")
        for k in table:
            if k not in _RUNTIME_KEYS:
                raise _unknown(k, _RUNTIME_KEYS, f"{where} [runtime.{rt}]")
        if "kernel_overhead_s" not in table:
            raise ProfileError(f"{where}: [runtime.{rt}] needs kernel_overhead_s")
        per_class = table.get("class_host_overhead_s", {})
        if not isinstance(per_class, dict):
            raise ProfileError(f"{where}: [runtime.{rt}.class_host_overhead_s] must be a table")
        for k in per_class:
            if k not in KERNEL_CLASSES:
                raise _unknown(k, KERNEL_CLASSES, f"{where} [runtime.{rt}.class_host_overhead_s]")
        runtimes[rt] = RuntimeParams(
            kernel_overhead_s=_number(
                table["kernel_overhead_s"], f"runtime.{rt}.kernel_overhead_s", where, positive=False
            ),
            host_overhead_s=_number(
                table.get("host_overhead_s", 0.0),
                f"runtime.{rt}.host_overhead_s",
                where,
                positive=False,
            ),
            class_host_overhead_s=MappingProxyType(
                {
                    k: _number(v, f"runtime.{rt}.class_host_overhead_s.{k}", where, positive=False)
                    for k, v in per_class.items()
                }
            ),
        )
    for table, allowed in (("calibration", _CALIBRATION_KEYS), ("fit", _FIT_KEYS),
                           ("rescale", _RESCALE_KEYS)):  # fmt: skip
        for k in data.get(table, {}):
            if k not in allowed:
                raise _unknown(k, allowed, f"{where} [{table}]")

    shape = {k: _number(data.get(k, d), k, where, positive=False) for k, d in SHAPE_KEYS.items()}
    if shape["memory_compute_overlap"] > 1.0:
        raise ProfileError(
            f"{where}: memory_compute_overlap={shape['memory_compute_overlap']!r} "
            "must be a fraction in [0, 1]"
        )
    if not 0.0 < shape["unaligned_channels_efficiency"] <= 1.0:
        raise ProfileError(
            f"{where}: unaligned_channels_efficiency="
            f"{shape['unaligned_channels_efficiency']!r} must be a fraction in (0, 1]"
        )
    conv_dispatch = data.get("conv_dispatch", "none")
    if conv_dispatch not in CONV_DISPATCH:
        raise ProfileError(
            f"{where}: conv_dispatch={conv_dispatch!r} is not one of {list(CONV_DISPATCH)}"
        )
    cache_model = data.get("cache_model", "blend")
    if cache_model not in CACHE_MODELS:
        raise ProfileError(
            f"{where}: cache_model={cache_model!r} is not one of {list(CACHE_MODELS)}"
        )
    threads = int(data.get("threads", 1))
    if threads < 1:
        raise ProfileError(f"{where}: threads={threads!r} must be >= 1")
    ce, ce_p = _efficiency_table(data.get("compute_efficiency", {}), "compute_efficiency", where)
    me, me_p = _efficiency_table(data.get("memory_efficiency", {}), "memory_efficiency", where)
    return HardwareProfile(
        name=data["name"],
        display_name=data.get("display_name", ""),
        source=data["source"],
        device_type=device_type,
        notes=data.get("notes", ""),
        memory_bytes=int(_number(data["memory_bytes"], "memory_bytes", where)),
        bandwidth_bytes_per_s=_number(
            data["bandwidth_bytes_per_s"], "bandwidth_bytes_per_s", where
        ),
        cache_bytes=int(_number(data.get("cache_bytes", 0), "cache_bytes", where, positive=False)),
        peak_ops_per_s=MappingProxyType(peaks),
        runtimes=MappingProxyType(runtimes),
        compute_efficiency=MappingProxyType(ce),
        memory_efficiency=MappingProxyType(me),
        compute_efficiency_by_precision=MappingProxyType(ce_p),
        memory_efficiency_by_precision=MappingProxyType(me_p),
        **shape,
        conv_dispatch=conv_dispatch,
        threads=threads,
        cache_model=cache_model,
        path=where,
    )


def available() -> list[str]:
    """Names of the built-in profiles, sorted."""
    return sorted(p.stem for p in DATA_DIR.glob("*.toml"))


# name or path -> (profile, mtime_ns of a user file; None for a built-in)
_CACHE: dict[str, tuple[HardwareProfile, int | None]] = {}


def load(name_or_path: str | Path | HardwareProfile) -> HardwareProfile:
    """A built-in profile by name, a TOML file by path, or a profile passed through.

    Loaded profiles are cached; a user's file is read again when it changes on disk.
    """
    if isinstance(name_or_path, HardwareProfile):
        return name_or_path
    key = str(name_or_path)
    if Path(key).suffix != ".toml" and Path(key).parent == Path("."):
        key = key.lower()  # a built-in name: "T4" is t4
    hit = _CACHE.get(key)
    if hit is not None and (hit[1] is None or _mtime_ns(Path(key)) == hit[1]):
        return hit[0]
    path, builtin = _profile_path(str(name_or_path))  # errors name what was given
    mtime = None if builtin else _mtime_ns(path)
    profile = parse_profile(_read_toml(path), str(path))
    _CACHE[key] = (profile, mtime)
    return profile


def load_fresh(path: str | Path) -> HardwareProfile:
    """Read and validate a profile file, bypassing ``load``'s cache (e.g. one just written)."""
    return parse_profile(_read_toml(Path(path)), str(path))


def calibration_table(name_or_path: str | Path) -> dict[str, Any]:
    """The ``[calibration]`` table a calibrated profile file records ({} when it has none)."""
    path, _ = _profile_path(str(name_or_path))
    table = _read_toml(path).get("calibration", {})
    return dict(table) if isinstance(table, dict) else {}


def _profile_path(key: str) -> tuple[Path, bool]:
    """The file of a built-in name or a user's path, and whether it is built in."""
    path = Path(key)
    builtin = path.suffix != ".toml" and path.parent == Path(".")
    if builtin:
        # Built-in names are lower case; "T4" is how people write it.
        path = DATA_DIR / f"{key.lower()}.toml"
        if not path.exists():
            hint = difflib.get_close_matches(key, available(), n=1)
            raise ProfileError(
                f"unknown hardware profile {key!r}"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
                + f"; known: {available()}, or pass a path to a .toml file"
            )
    elif not path.exists():
        raise ProfileError(f"hardware profile file {key!r} does not exist")
    return path, builtin


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"{path}: not valid TOML: {e}") from None


def _mtime_ns(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None
