"""Datasets for the accuracy estimators, as torch tensors; nothing is downloaded.

Four sources, all adapted to an architecture's ``input_shape`` (C, H, W):

- ``"digits"``: scikit-learn's bundled handwritten digits (1,797 8x8 grey
  images, 10 classes; ``sklearn.datasets.load_digits``), resized with bilinear
  interpolation and repeated over channels; a stratified, seeded train/val split.
- ``"digits_hard"``: the same originals, split (stratified, seeded) into train and
  val originals first, then each original drawn ``DIGITS_HARD_TRAIN_COPIES`` times
  (train) or ``DIGITS_HARD_VAL_COPIES`` times (val) at the target resolution with a
  random rotation, scale and translation, an elastic warp (Simard et al., "Best
  Practices for Convolutional Neural Networks Applied to Visual Document
  Analysis", ICDAR 2003, section 2), an occluding rectangle and Gaussian noise.
  No original has copies on both sides. Plain digits is too easy to tell
  architectures apart (most reach 93-98 %); this task is not. Deterministic for
  ``split_seed``; ``max_train_samples`` / ``max_val_samples`` subsample the copies.
- ``"cifar10"``: a local folder in the standard python-pickle format
  (``cifar-10-batches-py/data_batch_1..5`` for training, ``test_batch`` for
  validation), from https://www.cs.toronto.edu/~kriz/cifar.html.
- ``"imagefolder"``: ``root/<class_name>/*.png|jpg|jpeg|bmp``; classes are the
  sorted subfolder names. With ``root/train`` and ``root/val`` both present they
  are the splits, otherwise a stratified, seeded split of ``root``.

Every split is normalised per channel with the training split's mean and std.
Loaded datasets are cached per process (``load_dataset`` returns the same object
for the same arguments): treat the tensors as read-only.
"""

from __future__ import annotations

import functools
import math
import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

__all__ = [
    "DATASETS",
    "DIGITS_HARD_TRAIN_COPIES",
    "DIGITS_HARD_VAL_COPIES",
    "IMAGE_SUFFIXES",
    "Dataset",
    "DatasetNotFoundError",
    "load_dataset",
]

DATASETS: tuple[str, ...] = ("digits", "digits_hard", "cifar10", "imagefolder")
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp")
# digits_hard: 1,437 train originals x 2 = 2,874 distorted training images, of which a
# ranking protocol keeps a few hundred through max_train_samples (few images make
# capacity and inductive bias matter); 360 val originals x 3 = 1,080 validation images,
# so one accuracy has a binomial standard error under 1.5 points.
DIGITS_HARD_TRAIN_COPIES = 2
DIGITS_HARD_VAL_COPIES = 3
# Distortion strengths, fixed so that the task (and every accuracy measured on it) is
# one thing: strong enough that 8x8 digits stop being separable by any small net, weak
# enough that a digit stays recognisable and a short training learns it (with stronger
# settings, 100 SGD steps left every architecture near 30 % and the seed decided the rank).
_ROTATION_DEG = 15.0  # uniform in [-15, 15] degrees
_SCALE_RANGE = (0.85, 1.15)  # isotropic zoom
_SHIFT_FRACTION = 0.1  # translation, fraction of the image side, each axis
# Simard et al. 2003 use sigma = 4, alpha = 34 pixels on 28x28 MNIST. Smoothing a uniform
# field with a 2-D Gaussian divides its amplitude by about sigma, so the same relative
# displacement at side s takes sigma = 4 s / 28 and alpha = 34 (s / 28) ** 2.
_ELASTIC_SIGMA_FRACTION = 4.0 / 28.0
_ELASTIC_ALPHA_PX_AT_28 = 34.0
_OCCLUDE_SIDE = (0.15, 0.35)  # rectangle sides, fraction of the image side
_NOISE_STD = 0.1  # on pixel values in [0, 1]
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_VAL = "test_batch"
_CIFAR_HOWTO = (
    "download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html "
    "and extract it there (tar xzf cifar-10-python.tar.gz -C DIR); nothing is downloaded "
    "at run time"
)


class DatasetNotFoundError(FileNotFoundError):
    """A dataset folder or file is missing; the message says what is expected where."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """Normalised image tensors (N, C, H, W) float32 and int64 labels."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    num_classes: int
    class_names: tuple[str, ...]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.x_train.shape[1:]
        return (int(c), int(h), int(w))


def load_dataset(
    name: str,
    input_shape: Sequence[int],
    *,
    data_dir: str | os.PathLike[str] | None = None,
    val_fraction: float = 0.2,
    split_seed: int = 0,
    max_train_samples: int | None = None,
    max_val_samples: int | None = None,
) -> Dataset:
    """Load ``name`` adapted to ``input_shape`` = (C, H, W); cached per process.

    ``max_*_samples`` keep a seeded random subset (seeded by ``split_seed``) so a
    large dataset (CIFAR-10: 50,000 training images) need not be held as float.
    """
    if name not in DATASETS:
        raise ValueError(f"dataset={name!r} is not one of {list(DATASETS)}")
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape={tuple(input_shape)!r} must be (C, H, W), all >= 1")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction!r} must be in (0, 1)")
    for key, cap in (
        ("max_train_samples", max_train_samples),
        ("max_val_samples", max_val_samples),
    ):
        if cap is not None and cap < 1:
            raise ValueError(f"{key}={cap!r} must be >= 1 or None")
    root = None
    if name not in ("digits", "digits_hard"):
        if data_dir is None:
            raise DatasetNotFoundError(_missing_dir_message(name, None))
        root = str(Path(data_dir).expanduser().resolve())
    return _load_cached(
        name, root, shape, float(val_fraction), int(split_seed), max_train_samples, max_val_samples
    )


@functools.lru_cache(maxsize=8)
def _load_cached(
    name: str,
    root: str | None,
    shape: tuple[int, int, int],
    val_fraction: float,
    split_seed: int,
    max_train: int | None,
    max_val: int | None,
) -> Dataset:
    if name == "digits":
        return _digits(shape, val_fraction, split_seed, max_train, max_val)
    if name == "digits_hard":
        return _digits_hard(shape, val_fraction, split_seed, max_train, max_val)
    assert root is not None
    if name == "cifar10":
        return _cifar10(Path(root), shape, split_seed, max_train, max_val)
    return _imagefolder(Path(root), shape, val_fraction, split_seed, max_train, max_val)


# ---------------------------------------------------------------- sources


def _digit_originals(
    val_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray, tuple[str, ...]]:
    """scikit-learn's 8x8 digits in [0, 1] as (N, 1, 8, 8), labels, a stratified seeded
    train/val split of their indices, and the class names."""
    # scikit-learn is imported where it is needed: it costs about 1 s of CPU to import, which
    # every worker process would pay even when no estimator uses the digits data.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)  # 0..16
    labels = bunch.target.astype(np.int64)
    idx_train, idx_val = train_test_split(
        np.arange(len(labels)), test_size=val_fraction, random_state=seed, stratify=labels
    )
    names = tuple(str(c) for c in bunch.target_names)
    return images, torch.from_numpy(labels), idx_train, idx_val, names


def _digits(
    shape: tuple[int, int, int],
    val_fraction: float,
    seed: int,
    max_train: int | None,
    max_val: int | None,
) -> Dataset:
    x, labels, idx_train, idx_val, names = _digit_originals(val_fraction, seed)
    i_train = torch.from_numpy(_cap(idx_train, max_train, seed))
    i_val = torch.from_numpy(_cap(idx_val, max_val, seed + 1))
    return _finish("digits", x[i_train], labels[i_train], x[i_val], labels[i_val], shape, names)


def _digits_hard(
    shape: tuple[int, int, int],
    val_fraction: float,
    seed: int,
    max_train: int | None,
    max_val: int | None,
) -> Dataset:
    # split the originals before distorting, so no digit is seen on both sides
    images, labels, idx_train, idx_val, names = _digit_originals(val_fraction, seed)
    size = shape[1:]
    gen_train = torch.Generator().manual_seed(2 * seed)
    gen_val = torch.Generator().manual_seed(2 * seed + 1)
    x_train, y_train = _distorted_copies(
        images[idx_train], labels[idx_train], DIGITS_HARD_TRAIN_COPIES, size, gen_train
    )
    x_val, y_val = _distorted_copies(
        images[idx_val], labels[idx_val], DIGITS_HARD_VAL_COPIES, size, gen_val
    )
    i_train = torch.from_numpy(_cap(np.arange(len(y_train)), max_train, seed))
    i_val = torch.from_numpy(_cap(np.arange(len(y_val)), max_val, seed + 1))
    return _finish(
        "digits_hard", x_train[i_train], y_train[i_train], x_val[i_val], y_val[i_val], shape, names
    )


def _distorted_copies(
    images: torch.Tensor,
    labels: torch.Tensor,
    copies: int,
    size: tuple[int, int],
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``copies`` randomly distorted versions of every (N, 1, h, w) image in [0, 1], at ``size``."""
    src = images.repeat(copies, 1, 1, 1)
    n, (h, w) = src.shape[0], size
    src = F.interpolate(src, size=(h, w), mode="bilinear", align_corners=False)

    def uniform(low: float, high: float, *dims: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(dims, generator=gen)

    # affine: output pixel p samples the source at A p + t (normalised coords in [-1, 1])
    angle = torch.deg2rad(uniform(-_ROTATION_DEG, _ROTATION_DEG, n))
    inv_scale = 1.0 / uniform(*_SCALE_RANGE, n)
    cos, sin = torch.cos(angle) * inv_scale, torch.sin(angle) * inv_scale
    shift = uniform(-2 * _SHIFT_FRACTION, 2 * _SHIFT_FRACTION, n, 2)
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
    # elastic warp (Simard et al. 2003): a uniform [-1, 1] displacement field per pixel,
    # smoothed by a Gaussian of std sigma, scaled by alpha (pixels -> normalised units)
    field = _gaussian_blur(uniform(-1.0, 1.0, n, 2, h, w), _ELASTIC_SIGMA_FRACTION * h)
    alpha_px = _ELASTIC_ALPHA_PX_AT_28 * (h / 28.0) ** 2
    field = field * alpha_px * torch.tensor([2.0 / w, 2.0 / h]).view(1, 2, 1, 1)
    grid = grid + field.permute(0, 2, 3, 1)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # occlusion: a background-valued rectangle of random size and place
    rh = (uniform(*_OCCLUDE_SIDE, n) * h).round().long().clamp_min(1)
    rw = (uniform(*_OCCLUDE_SIDE, n) * w).round().long().clamp_min(1)
    top = (torch.rand(n, generator=gen) * (h - rh + 1)).long()
    left = (torch.rand(n, generator=gen) * (w - rw + 1)).long()
    rows, cols = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
    inside = (
        (rows >= top.view(n, 1, 1))
        & (rows < (top + rh).view(n, 1, 1))
        & (cols >= left.view(n, 1, 1))
        & (cols < (left + rw).view(n, 1, 1))
    )
    out = out.masked_fill(inside.unsqueeze(1), 0.0)
    out = out + _NOISE_STD * torch.randn(out.shape, generator=gen)
    return out.clamp(0.0, 1.0), labels.repeat(copies)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W) with std ``sigma`` pixels, zero padding."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), padding=(0, radius), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), padding=(radius, 0), groups=c)


def _cifar10(
    root: Path, shape: tuple[int, int, int], seed: int, max_train: int | None, max_val: int | None
) -> Dataset:
    folder = root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else root
    missing = [f for f in (*_CIFAR_TRAIN, _CIFAR_VAL) if not (folder / f).is_file()]
    if missing:
        raise DatasetNotFoundError(_missing_dir_message("cifar10", root, missing))
    xs, ys = zip(*(_read_cifar_batch(folder / f) for f in _CIFAR_TRAIN), strict=True)
    x_train, y_train = np.concatenate(xs), np.concatenate(ys)
    x_val, y_val = _read_cifar_batch(folder / _CIFAR_VAL)
    i_train = _cap(np.arange(len(y_train)), max_train, seed)
    i_val = _cap(np.arange(len(y_val)), max_val, seed + 1)
    names: tuple[str, ...] = tuple(f"class_{i}" for i in range(10))
    meta = folder / "batches.meta"
    if meta.is_file():
        with meta.open("rb") as fh:
            raw = pickle.load(fh, encoding="bytes")
        label_names = raw.get(b"label_names") or raw.get("label_names")
        if label_names:
            names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in label_names)

    def to_tensor(a: np.ndarray) -> torch.Tensor:
        # rows are 3072 uint8: 1024 red, 1024 green, 1024 blue, each 32x32 row-major
        return torch.from_numpy(a.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0)

    return _finish(
        "cifar10",
        to_tensor(x_train[i_train]),
        torch.from_numpy(y_train[i_train]),
        to_tensor(x_val[i_val]),
        torch.from_numpy(y_val[i_val]),
        shape,
        names,
    )


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with path.open("rb") as fh:
            raw = pickle.load(fh, encoding="bytes")
        data = np.asarray(raw[b"data"], dtype=np.uint8)
        labels = np.asarray(raw[b"labels"], dtype=np.int64)
    except (OSError, pickle.UnpicklingError, KeyError, TypeError, ValueError, EOFError) as exc:
        raise ValueError(
            f"{path} is not a CIFAR-10 python batch (a pickled dict with b'data' "
            f"(N, 3072) uint8 and b'labels'): {exc!r}"
        ) from exc
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise ValueError(
            f"{path}: data shape {data.shape} / {len(labels)} labels, expected (N, 3072) / N"
        )
    return data, labels


def _imagefolder(
    root: Path,
    shape: tuple[int, int, int],
    val_fraction: float,
    seed: int,
    max_train: int | None,
    max_val: int | None,
) -> Dataset:
    if not root.is_dir():
        raise DatasetNotFoundError(_missing_dir_message("imagefolder", root))
    if (root / "train").is_dir() and (root / "val").is_dir():
        classes = _class_names(root / "train")
        f_train, l_train = _list_images(root / "train", classes)
        f_val, l_val = _list_images(root / "val", classes, allow_missing_classes=True)
    else:
        from sklearn.model_selection import train_test_split  # see _digits

        classes = _class_names(root)
        files, labels = _list_images(root, classes)
        # stratify only when every class can give at least one image to each side
        counts = np.bincount(labels, minlength=len(classes))
        n_val = max(1, round(val_fraction * len(labels)))
        stratify = (
            labels
            if counts.min() >= 2 and len(classes) <= n_val <= len(labels) - len(classes)
            else None
        )
        if len(labels) < 2:
            raise ValueError(f"imagefolder {root} has {len(labels)} image(s); need at least 2")
        i_train, i_val = train_test_split(
            np.arange(len(labels)), test_size=n_val, random_state=seed, stratify=stratify
        )
        f_train, l_train = [files[i] for i in i_train], labels[i_train]
        f_val, l_val = [files[i] for i in i_val], labels[i_val]
    i_t = _cap(np.arange(len(f_train)), max_train, seed)
    i_v = _cap(np.arange(len(f_val)), max_val, seed + 1)
    x_train = _read_images([f_train[i] for i in i_t], shape)
    x_val = _read_images([f_val[i] for i in i_v], shape)
    return _finish(
        "imagefolder",
        x_train,
        torch.from_numpy(np.asarray(l_train)[i_t]),
        x_val,
        torch.from_numpy(np.asarray(l_val)[i_v]),
        shape,
        classes,
    )


def _class_names(root: Path) -> tuple[str, ...]:
    classes = tuple(sorted(p.name for p in root.iterdir() if p.is_dir()))
    if not classes:
        raise DatasetNotFoundError(_missing_dir_message("imagefolder", root, ["<class_name>/"]))
    return classes


def _list_images(
    root: Path, classes: tuple[str, ...], *, allow_missing_classes: bool = False
) -> tuple[list[Path], np.ndarray]:
    files: list[Path] = []
    labels: list[int] = []
    extra = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in classes)
    if extra:
        raise ValueError(f"imagefolder {root}: class folders {extra} are not in {list(classes)}")
    for label, cls in enumerate(classes):
        folder = root / cls
        if not folder.is_dir():
            if allow_missing_classes:
                continue
            raise DatasetNotFoundError(f"imagefolder class folder {folder} is missing")
        found = sorted(
            p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not found and not allow_missing_classes:
            raise DatasetNotFoundError(
                f"imagefolder class folder {folder} has no images ({', '.join(IMAGE_SUFFIXES)})"
            )
        files += found
        labels += [label] * len(found)
    if not files:
        raise DatasetNotFoundError(
            f"imagefolder {root} has no images ({', '.join(IMAGE_SUFFIXES)})"
        )
    return files, np.asarray(labels, dtype=np.int64)


def _read_images(files: list[Path], shape: tuple[int, int, int]) -> torch.Tensor:
    c, h, w = shape
    mode = "L" if c == 1 else "RGB"
    out = np.empty((len(files), h, w, 1 if c == 1 else 3), dtype=np.float32)
    for i, path in enumerate(files):
        try:
            with Image.open(path) as img:
                arr = np.asarray(img.convert(mode).resize((w, h), Image.BILINEAR))
        except (OSError, ValueError, UnidentifiedImageError) as exc:
            raise ValueError(f"cannot read image {path}: {exc}") from exc
        out[i] = arr.reshape(h, w, -1) / 255.0
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


# ---------------------------------------------------------------- adaptation


def _cap(idx: np.ndarray, cap: int | None, seed: int) -> np.ndarray:
    if cap is None or cap >= len(idx):
        return idx
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(idx, size=cap, replace=False))


def _adapt(x: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Resize to (H, W) and map channels: 1 -> C by repetition, 3 -> 1 by the mean."""
    c, h, w = shape
    if tuple(x.shape[2:]) != (h, w):
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    src = x.shape[1]
    if src == c:
        return x
    if src == 1:
        return x.repeat(1, c, 1, 1)
    if c == 1:
        return x.mean(dim=1, keepdim=True)
    raise ValueError(f"cannot map {src} image channels to input_shape channels C={c}")


def _finish(
    name: str,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    shape: tuple[int, int, int],
    class_names: tuple[str, ...],
) -> Dataset:
    x_train, x_val = _adapt(x_train, shape), _adapt(x_val, shape)
    mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
    std = x_train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    return Dataset(
        name=name,
        x_train=((x_train - mean) / std).contiguous(),
        y_train=y_train.long(),
        x_val=((x_val - mean) / std).contiguous(),
        y_val=y_val.long(),
        num_classes=len(class_names),
        class_names=class_names,
    )


def _missing_dir_message(name: str, root: Path | None, missing: Sequence[str] = ()) -> str:
    if name == "cifar10":
        if root is None:
            where = "data_dir is not set"
        elif not root.exists():
            where = f"{root} does not exist"
        else:
            where = f"{root} lacks {list(missing)}"
        return (
            f"dataset='cifar10': {where}. Expected data_dir=DIR with DIR/cifar-10-batches-py/"
            f"{{data_batch_1..5, test_batch}} (or those files directly in DIR): {_CIFAR_HOWTO}"
        )
    where = "data_dir is not set" if root is None else f"{root} is missing or empty"
    return (
        f"dataset='imagefolder': {where}. Expected data_dir=DIR laid out as "
        f"DIR/<class_name>/*.png|jpg (or DIR/train/<class_name>/... and DIR/val/<class_name>/...)"
    )
