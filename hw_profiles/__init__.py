"""Hardware descriptions as TOML data files (see ``hw_profiles/data``)."""

from hw_profiles._schema import (
    DEVICE_TYPES,
    KERNEL_CLASSES,
    PRECISIONS,
    RUNTIMES,
    HardwareProfile,
    ProfileError,
    RuntimeParams,
    available,
    load,
    parse_profile,
)

__all__ = [
    "DEVICE_TYPES",
    "KERNEL_CLASSES",
    "PRECISIONS",
    "RUNTIMES",
    "HardwareProfile",
    "ProfileError",
    "RuntimeParams",
    "available",
    "load",
    "parse_profile",
]
