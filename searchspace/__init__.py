"""Search spaces, architectures, the PyTorch builder and the standalone export.

space = load_space("mobile")                # a shipped space by name, or a TOML path
arch = sample(trial, space)                 # Optuna define-by-run
Architecture.from_string(arch.to_string()) == arch
arch.lower(batch=1)                         # tuple[costmodel.LayerSpec, ...]
costmodel.estimate(arch)                    # costs from cached per-segment sums
model = build(arch)                         # torch.nn.Module (also arch.build())
NB201Net.from_string("|nor_conv_3x3~0|+...")  # NAS-Bench-201; OFANet: once-for-all MBv3
src = export_source(arch)                   # standalone .py source
"""

from searchspace._arch import ACTIVATIONS, BLOCK_OPS, Architecture, Block, Head, Stem
from searchspace._build import build, config
from searchspace._export import export_source
from searchspace._lower import lower
from searchspace._nb201 import NB201Net
from searchspace._ofa import OFANet
from searchspace._sample import sample, sample_architectures
from searchspace._space import (
    SPACE_OPS,
    SPACES_DIR,
    HeadSpace,
    SearchSpace,
    SpaceError,
    StageSpace,
    StemSpace,
    available_spaces,
    load_space,
    parse_space,
    round_width,
    space_path,
)
from searchspace._zoo import (
    REFERENCE_ARCH,
    SHUFFLENET_WIDTHS,
    mobilenet_v2,
    reference_architecture,
    shufflenet_v1_like,
)

__all__ = [
    "ACTIVATIONS",
    "BLOCK_OPS",
    "REFERENCE_ARCH",
    "SHUFFLENET_WIDTHS",
    "SPACES_DIR",
    "SPACE_OPS",
    "Architecture",
    "Block",
    "Head",
    "HeadSpace",
    "NB201Net",
    "OFANet",
    "SearchSpace",
    "SpaceError",
    "StageSpace",
    "Stem",
    "StemSpace",
    "available_spaces",
    "build",
    "config",
    "export_source",
    "load_space",
    "lower",
    "mobilenet_v2",
    "parse_space",
    "reference_architecture",
    "round_width",
    "sample",
    "sample_architectures",
    "shufflenet_v1_like",
    "space_path",
]
