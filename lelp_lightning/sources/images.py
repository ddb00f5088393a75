"""What the image sources share: reading IDX files, pixel scaling, image splits.

An image split keeps its rows in ``SplitData.texts`` as a uint8 array [N,H,W] (the raw inputs, like the
strings of a text split); :func:`scale_pixels` is the one place where pixels become floats (the pixel
featuriser and the CNN teacher both call it). Both image sources binarise by ``label % 2`` and keep the
original classes as ``fine_labels`` (the oracle's subclasses).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from lelp_lightning.core import SplitData
from lelp_lightning.errors import LelpError

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """The array in an IDX file (gzipped or not): 2 zero bytes, a dtype code, the number of dimensions, the
    big-endian uint32 sizes, then the values."""
    path = Path(path)
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_DTYPES:
        raise LelpError(f"{path} is not an IDX file; expected two zero bytes and a known dtype code first.")
    ndim = raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    offset = 4 + 4 * ndim
    if len(raw) - offset != int(np.prod(shape)) * dtype.itemsize:
        raise LelpError(f"{path} holds {len(raw) - offset} data bytes but its header announces shape {shape} "
                        f"of {dtype}; the file is truncated or corrupt.")
    return np.frombuffer(raw, dtype, offset=offset).reshape(shape).astype(dtype.newbyteorder("="))


def scale_pixels(images: np.ndarray, mean: float = 0.0, std: float = 1.0) -> np.ndarray:
    """uint8 images [N,H,W] → float32 [N,1,H,W]: pixels in [0,1], then ``(x - mean) / std``."""
    x = images.astype(np.float32)[:, None] / np.float32(255)
    return (x - np.float32(mean)) / np.float32(std) if (mean, std) != (0.0, 1.0) else x


def image_split(name: str, images: np.ndarray, fine: np.ndarray, ids: np.ndarray, binary: bool,
           id_offset: int = 0) -> SplitData:
    ids = np.sort(ids)
    return SplitData(name=name, texts=np.ascontiguousarray(images[ids]),
                     labels=(fine[ids] % 2 if binary else fine[ids]).astype(np.int64),
                     row_ids=ids.astype(np.int64) + id_offset, fine_labels=fine[ids].astype(np.int64))


def stratified_subset(ids: np.ndarray, fine: np.ndarray, size: int | None, seed: int) -> np.ndarray:
    """A deterministic subset of ``size`` rows stratified by fine label (all rows when ``size`` is None)."""
    if size is None or size >= len(ids):
        return ids
    return train_test_split(ids, train_size=size, random_state=seed, stratify=fine[ids])[0]
