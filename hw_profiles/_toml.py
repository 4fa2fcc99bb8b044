"""Writing a profile back to TOML, in the schema ``hw_profiles.load`` reads."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hw_profiles._schema import SHAPE_KEYS, HardwareProfile


def _fmt(v: Any) -> str:
    if isinstance(v, dict):  # an inline table
        return "{ " + ", ".join(f"{k} = {_fmt(x)}" for k, x in v.items()) + " }"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v.is_integer() and abs(v) < 1e15:  # sizes in bytes: exact
            return f"{int(v)}.0"
        return f"{v:.6g}" if "e" in f"{v:.6g}" or "." in f"{v:.6g}" else f"{v:.6g}.0"
    s = str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{s}"'


def profile_to_toml(
    hw: HardwareProfile,
    calibration: Mapping[str, Any],
    header: str = "",
    table: str = "calibration",
    more_tables: Mapping[str, Mapping[str, Any]] | None = None,
) -> str:
    """The profile as TOML, with ``calibration`` as its ``[table]`` (calibration or fit) and
    each of ``more_tables`` (e.g. rescale) after it."""
    lines = [f"# {line}" for line in header.splitlines()]
    for k in ("name", "display_name", "device_type", "source", "notes"):
        lines.append(f"{k} = {_fmt(getattr(hw, k))}")
    lines.append(f"memory_bytes = {hw.memory_bytes}")
    lines.append(f"bandwidth_bytes_per_s = {_fmt(float(hw.bandwidth_bytes_per_s))}")
    lines.append(f"cache_bytes = {hw.cache_bytes}")
    lines.append(f"conv_dispatch = {_fmt(hw.conv_dispatch)}")
    lines.append(f"threads = {hw.threads}")
    lines.append(f"cache_model = {_fmt(hw.cache_model)}")
    for k in SHAPE_KEYS:
        lines.append(f"{k} = {_fmt(float(getattr(hw, k)))}")
    lines += ["", "[peak_ops_per_s]"]
    lines += [f"{p} = {_fmt(float(v))}" for p, v in hw.peak_ops_per_s.items()]
    for rt, params in hw.runtimes.items():
        lines += ["", f"[runtime.{rt}]"]
        lines.append(f"kernel_overhead_s = {_fmt(float(params.kernel_overhead_s))}")
        lines.append(f"host_overhead_s = {_fmt(float(params.host_overhead_s))}")
        if params.class_host_overhead_s:
            lines.append(f"[runtime.{rt}.class_host_overhead_s]")
            lines += [f"{c} = {_fmt(float(v))}" for c, v in params.class_host_overhead_s.items()]
    for table_name, values in (
        ("compute_efficiency", hw.compute_efficiency),
        ("memory_efficiency", hw.memory_efficiency),
    ):
        if values:
            lines += ["", f"[{table_name}]"]
            lines += [f"{c} = {_fmt(float(v))}" for c, v in values.items()]
    for table_name, by_precision in (
        ("compute_efficiency", hw.compute_efficiency_by_precision),
        ("memory_efficiency", hw.memory_efficiency_by_precision),
    ):
        for prec, values in by_precision.items():
            lines += ["", f"[{table_name}.{prec}]"]
            lines += [f"{c} = {_fmt(float(v))}" for c, v in values.items()]
    for name, values in {table: calibration, **(more_tables or {})}.items():
        lines += ["", f"[{name}]"]
        lines += [f"{k} = {_fmt(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"
