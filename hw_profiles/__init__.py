"""Hardware descriptions as TOML data files (see ``hw_profiles/data``)."""

from hw_profiles._precision import (
    BITS_PER_ELEMENT,
    FLOAT_PRECISIONS,
    PRECISIONS,
    STORAGE_PRECISIONS,
    Precision,
)
from hw_profiles._schema import (
    DEVICE_TYPES,
    KERNEL_CLASSES,
    PARENT_CLASS,
    RUNTIMES,
    HardwareProfile,
    ProfileError,
    RuntimeParams,
    available,
    calibration_table,
    load,
    load_fresh,
    parse_profile,
)
from hw_profiles._toml import profile_to_toml

__all__ = [
    "BITS_PER_ELEMENT",
    "DEVICE_TYPES",
    "FLOAT_PRECISIONS",
    "KERNEL_CLASSES",
    "PARENT_CLASS",
    "PRECISIONS",
    "RUNTIMES",
    "STORAGE_PRECISIONS",
    "HardwareProfile",
    "Precision",
    "ProfileError",
    "RuntimeParams",
    "available",
    "calibration_table",
    "load",
    "load_fresh",
    "parse_profile",
    "profile_to_toml",
]
