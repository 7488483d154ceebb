"""Image and depth reading, resizing and padding exactly as the original MegaDepth pipeline.

The original (``src/utils/dataset.py``) reads an 8-bit grayscale image, resizes it so that its
long side is ``R`` (``scale = R / max(h, w)``, ``w' = int(round(w * scale))``, the same for ``h``,
then both floored to multiples of 8), resizes with ``cv2.resize``'s default bilinear
interpolation straight from the original, and zero-pads bottom/right to a square of side
``max(h', w')``. The coarse mask is the padding mask sampled every 8 pixels. Depth maps are read
at their original resolution and zero-padded bottom/right to 2000 x 2000.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import h5py
import numpy as np
import torch

from loftr_data.errors import DataConfigError, DatasetFileError

__all__ = [
    "DEPTH_PAD_SIZE",
    "coarse_mask",
    "pad_bottom_right",
    "read_depth",
    "read_gray",
    "resize_long_side",
    "resized_size",
]

DEPTH_PAD_SIZE = 2000
_DF = 8


def resized_size(width: int, height: int, long_side: int, df: int = _DF) -> tuple[int, int]:
    """The original's output size for an image resized to ``long_side``.

    Args:
        width: original width in pixels (> 0).
        height: original height in pixels (> 0).
        long_side: target long side ``R`` (> 0).
        df: the size divisor (8 for LoFTR).

    Returns:
        ``(w', h')``: ``int(round(side * R / max(w, h)))`` floored to a multiple of ``df``
        (Python's ``round``: halves go to the even integer, as in the original).
    """
    if width <= 0 or height <= 0:
        raise DataConfigError(f"image size must be positive, got {width}x{height} (WxH)")
    if long_side <= 0 or df <= 0:
        raise DataConfigError(f"long_side and df must be positive, got {long_side} and {df}")
    scale = long_side / max(width, height)
    w_new = round(width * scale)  # Python round: halves to even, as the original
    h_new = round(height * scale)
    return (w_new // df) * df, (h_new // df) * df


def read_gray(path: Path) -> np.ndarray:
    """Read an image as 8-bit grayscale.

    Args:
        path: image file.

    Returns:
        ``(h, w)`` uint8 array.

    Raises:
        DatasetFileError: if OpenCV cannot decode the file.
    """
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise DatasetFileError(
            f"cannot read image {path}: OpenCV could not decode it (missing, unreadable or not an "
            "image); check the dataset root and the file"
        )
    return np.asarray(image)


def resize_long_side(image: np.ndarray, long_side: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize a grayscale image as the original does.

    Args:
        image: ``(h, w)`` uint8.
        long_side: target long side ``R``; a multiple of 8.

    Returns:
        ``(resized, scale)``: the ``(h', w')`` uint8 image and ``scale`` = ``(w / w', h / h')``
        float32 ``(2,)``.
    """
    h, w = image.shape[:2]
    w_new, h_new = resized_size(w, h, long_side)
    if w_new == 0 or h_new == 0:
        raise DataConfigError(
            f"image of {w}x{h} (WxH) resized to long side {long_side} gives an empty side "
            f"({w_new}x{h_new}); use a larger long side"
        )
    resized = cv2.resize(image, (w_new, h_new))
    scale = np.array([w / w_new, h / h_new], dtype=np.float32)
    return np.asarray(resized), scale


def pad_bottom_right(array: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Zero-pad a 2-D array bottom/right to ``size x size``.

    Args:
        array: ``(h, w)`` array with ``h, w <= size``.
        size: output side.

    Returns:
        ``(padded, mask)``: ``(size, size)`` array of the input dtype and a bool mask that is True
        on the original ``h x w`` region.
    """
    h, w = array.shape[:2]
    if h > size or w > size:
        raise DataConfigError(f"cannot pad an array of {h}x{w} (HxW) to {size}x{size}: too large")
    padded = np.zeros((size, size), dtype=array.dtype)
    padded[:h, :w] = array
    mask = np.zeros((size, size), dtype=bool)
    mask[:h, :w] = True
    return padded, mask


def coarse_mask(mask: np.ndarray, df: int = _DF) -> torch.Tensor:
    """The coarse padding mask: ``mask[::df, ::df]`` (nearest, as ``F.interpolate(scale=1/8)``).

    Args:
        mask: ``(H, W)`` bool with ``H, W`` multiples of ``df``.
        df: the downsampling factor.

    Returns:
        ``(H / df, W / df)`` bool tensor.
    """
    return torch.from_numpy(np.ascontiguousarray(mask[::df, ::df]))


def read_depth(path: Path, pad_to: int = DEPTH_PAD_SIZE) -> torch.Tensor:
    """Read a MegaDepth depth map (``.h5``, dataset ``depth``) and zero-pad it bottom/right.

    Args:
        path: the ``.h5`` file.
        pad_to: output side (2000 in the original).

    Returns:
        ``(pad_to, pad_to)`` float32 tensor; 0 where there is no depth.

    Raises:
        DatasetFileError: if the file has no ``depth`` dataset, is not 2-D or is larger than
            ``pad_to``.
    """
    try:
        with h5py.File(path, "r") as f:
            if "depth" not in f:
                raise DatasetFileError(
                    f"depth file {path} has no dataset 'depth' (found {sorted(f.keys())}); "
                    "MegaDepth depth maps store it under 'depth'"
                )
            dset = f["depth"]
            shape = tuple(dset.shape)
            if len(shape) != 2 or shape[0] > pad_to or shape[1] > pad_to:
                raise DatasetFileError(
                    f"depth map {path} has shape {shape}; expected 2-D and at most "
                    f"{pad_to}x{pad_to}"
                )
            out = np.zeros((pad_to, pad_to), dtype=np.float32)
            region = np.s_[: shape[0], : shape[1]]
            if dset.dtype == np.float32 and shape[0] * shape[1] > 0:
                dset.read_direct(out, np.s_[:, :], region)  # decode straight into the padding
            else:
                out[region] = np.asarray(dset, dtype=np.float32)
    except OSError as exc:
        raise DatasetFileError(f"cannot read depth file {path}: {exc}") from exc
    return torch.from_numpy(out)
