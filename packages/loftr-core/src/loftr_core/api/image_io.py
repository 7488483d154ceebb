"""Reading images and turning anything image-like into the grayscale array LoFTR sees.

LoFTR runs on grayscale in [0, 1]. The original reads files with
``cv2.imread(path, cv2.IMREAD_GRAYSCALE)``; :func:`read_image` decodes with exactly that flag,
so file inputs give the original's pixels bit-for-bit. This also makes two awkward inputs just
work: a 16-bit PNG is reduced to 8 bits by OpenCV (``value >> 8``, i.e. full-range linear) and an
alpha channel is dropped (the colour channels are converted, transparency is ignored).

In-memory inputs (:func:`to_gray`):

* numpy ``(H, W)`` gray, ``(H, W, 1)``, ``(H, W, 3)`` colour (RGB unless ``channel_order="bgr"``),
  ``(H, W, 4)`` with alpha (alpha dropped); dtype uint8, uint16 (``>> 8`` like OpenCV) or float
  in [0, 1]. Colour -> gray uses ``cv2.cvtColor`` (weights 0.299 R + 0.587 G + 0.114 B).
* torch tensors in torch's channel-first layout: ``(H, W)``, ``(1, H, W)``, ``(3, H, W)`` (RGB),
  ``(1, 1, H, W)``; uint8 or float in [0, 1].

Corrupt files are refused before decoding (an empty file, a JPEG cut short) because OpenCV
would otherwise print a warning and return a partly grey image.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch

from loftr_core.errors import InputError

__all__ = ["ImageLike", "is_truncated_jpeg", "read_image", "resize_long_side", "to_gray"]

logger = logging.getLogger(__name__)

#: Everything the matcher accepts as an image.
ImageLike = str | os.PathLike[str] | np.ndarray | torch.Tensor

_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"
_JPEG_SOS = 0xDA
_STANDALONE_MARKERS = {0x01, *range(0xD0, 0xD8)}  # TEM, RST0-7: no length field


def is_truncated_jpeg(data: bytes) -> bool:
    """Whether ``data`` is a JPEG whose entropy-coded data stops before the end-of-image marker.

    Walks the marker segments up to the first start-of-scan (skipping APPn segments, so an EXIF
    thumbnail's own end marker does not count), then looks for the end-of-image marker after it.
    Inside entropy-coded data every 0xFF byte is stuffed (0xFF00) or a restart marker, so
    ``FF D9`` there can only be the real end. Bytes after the end marker are allowed.

    Args:
        data: the file's bytes.

    Returns:
        True for a JPEG cut short (or with broken segment lengths); False for a complete JPEG
        and for anything that is not a JPEG.
    """
    if not data.startswith(_JPEG_SOI):
        return False
    pos = 2
    n = len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return True  # segment structure broken
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE_MARKERS:
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == _JPEG_SOS:
            return data.find(_JPEG_EOI, pos + 2 + length) < 0
        pos += 2 + length
    return True


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as 8-bit grayscale, exactly like ``cv2.imread(path, IMREAD_GRAYSCALE)``.

    Args:
        path: any format OpenCV decodes (JPEG, PNG incl. 16-bit and alpha, BMP, TIFF, WebP...).

    Returns:
        ``(H, W)`` uint8 array.

    Raises:
        InputError: the file is missing, a directory, empty, truncated or not a decodable image.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"image file {str(p)!r} does not exist; check the path")
    if not p.is_file():
        raise InputError(f"image path {str(p)!r} is not a file; pass the path of an image file")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read image file {str(p)!r}: {exc.strerror or exc}") from None
    if not data:
        raise InputError(f"image file {str(p)!r} is empty (0 bytes); re-download or re-export it")
    if is_truncated_jpeg(data):
        raise InputError(
            f"image file {str(p)!r} is a truncated JPEG ({len(data)} bytes, no end-of-image "
            "marker); the download or copy was cut short, fetch the file again"
        )
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        image = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    except cv2.error:
        image = None
    if image is None or image.size == 0:
        raise InputError(
            f"file {str(p)!r} ({len(data)} bytes) is not an image OpenCV can decode; pass a "
            "JPEG, PNG, BMP, TIFF or WebP file"
        )
    if image.dtype != np.uint8:  # e.g. float TIFFs keep their depth with some OpenCV builds
        image = _to_uint8(image, f"image file {str(p)!r}")
    return np.ascontiguousarray(image)


def _to_uint8(array: np.ndarray, name: str) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        return (array >> 8).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        return np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)
    raise InputError(f"{name} has dtype {array.dtype}; use uint8, uint16 or float in [0, 1]")


def _gray_from_numpy(array: np.ndarray, name: str, channel_order: str) -> np.ndarray:
    if array.dtype == np.bool_ or not (
        np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    ):
        raise InputError(f"{name} has dtype {array.dtype}; use uint8, uint16 or float in [0, 1]")
    if np.issubdtype(array.dtype, np.integer) and array.dtype not in (np.uint8, np.uint16):
        raise InputError(
            f"{name} has dtype {array.dtype}; integer images must be uint8 or uint16 "
            "(or pass float values in [0, 1])"
        )
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        gray = array
    elif array.ndim == 3 and array.shape[2] in (3, 4):
        if array.dtype == np.uint16:
            array = (array >> 8).astype(np.uint8)
        elif np.issubdtype(array.dtype, np.floating):
            array = array.astype(np.float32)
        code = {
            ("rgb", 3): cv2.COLOR_RGB2GRAY,
            ("bgr", 3): cv2.COLOR_BGR2GRAY,
            ("rgb", 4): cv2.COLOR_RGBA2GRAY,
            ("bgr", 4): cv2.COLOR_BGRA2GRAY,
        }[(channel_order, array.shape[2])]
        gray = cv2.cvtColor(np.ascontiguousarray(array), code)
    else:
        raise InputError(
            f"{name} has shape {tuple(array.shape)}; numpy images must be (H, W) gray or "
            "(H, W, 3) / (H, W, 4) colour"
        )
    if gray.dtype == np.uint16:
        gray = (gray >> 8).astype(np.uint8)
    if np.issubdtype(gray.dtype, np.floating):
        gray = gray.astype(np.float32)
        if gray.size and not np.all(np.isfinite(gray)):
            raise InputError(f"{name} contains NaN or infinite values")
        lo, hi = (float(gray.min()), float(gray.max())) if gray.size else (0.0, 0.0)
        if lo < 0.0 or hi > 1.0:
            raise InputError(
                f"{name} is a float image with values in [{lo:g}, {hi:g}]; float images must be "
                "in [0, 1] (divide 0-255 values by 255 or pass uint8)"
            )
    return np.ascontiguousarray(gray)


def _gray_from_tensor(tensor: torch.Tensor, name: str) -> np.ndarray:
    t = tensor.detach()
    if t.ndim == 4 and t.shape[0] == 1:
        t = t[0]
    if t.ndim == 3 and t.shape[0] in (1, 3, 4):
        t = t[0] if t.shape[0] == 1 else t.permute(1, 2, 0)
    elif t.ndim != 2:
        raise InputError(
            f"{name} is a tensor of shape {tuple(tensor.shape)}; tensors must be (H, W), "
            "(1, H, W), (3, H, W) RGB or (1, 1, H, W)"
        )
    if t.dtype in (torch.float16, torch.bfloat16, torch.float64):
        t = t.float()
    if t.dtype not in (torch.uint8, torch.float32):
        raise InputError(f"{name} has dtype {tensor.dtype}; use torch.uint8 or float in [0, 1]")
    return _gray_from_numpy(t.cpu().numpy(), name, "rgb")


def to_gray(
    image: ImageLike, *, name: str = "image", channel_order: Literal["rgb", "bgr"] = "rgb"
) -> np.ndarray:
    """Turn a path, numpy array or tensor into a 2-D grayscale array.

    Args:
        image: a file path, a numpy array or a torch tensor (see the module docstring).
        name: what to call the input in error messages (e.g. ``"image0"``).
        channel_order: channel order of 3/4-channel numpy arrays (``"rgb"`` as PIL/imageio give,
            ``"bgr"`` as ``cv2.imread`` gives). Files are always decoded correctly.

    Returns:
        ``(H, W)`` array, uint8 (0-255) or float32 in [0, 1].

    Raises:
        InputError: an unreadable file, a wrong shape or dtype, float values outside [0, 1].
    """
    if channel_order not in ("rgb", "bgr"):
        raise InputError(f"channel_order={channel_order!r}; allowed are 'rgb' and 'bgr'")
    if isinstance(image, (str, os.PathLike)):
        gray = read_image(image)
    elif isinstance(image, np.ndarray):
        gray = _gray_from_numpy(image, name, channel_order)
    elif isinstance(image, torch.Tensor):
        gray = _gray_from_tensor(image, name)
    else:
        raise InputError(
            f"{name} is a {type(image).__name__}; pass a file path, a numpy array or a torch tensor"
        )
    if gray.shape[0] == 0 or gray.shape[1] == 0:
        raise InputError(f"{name} is empty (shape {tuple(gray.shape)})")
    return gray


def resize_long_side(
    gray: np.ndarray, long_side: int, divisor: int = 8
) -> tuple[np.ndarray, tuple[float, float]]:
    """Resize as the original's test-time pipeline does (``get_resized_wh`` + ``get_divisible_wh``).

    With ``s = long_side / max(h, w)`` the size is ``round(w * s), round(h * s)`` (Python's
    ``round``), each side then floored to a multiple of ``divisor`` (8, the coarse stride), and the
    image is resized to that size in one bilinear step (``cv2.INTER_LINEAR``). A 1026x768 image at
    840 becomes 840x624, so no padding (and no mask) is needed afterwards.

    Args:
        gray: ``(H, W)`` uint8 or float32 image.
        long_side: target length of the longer side in pixels (>= 1).
        divisor: each side of the result is a multiple of it.

    Returns:
        The resized ``(H', W')`` image (same dtype) and ``(sx, sy) = (W / W', H / H')``, the
        factors that map resized pixel coordinates back to the original image.

    Raises:
        InputError: ``long_side`` is not a positive int, or a side would become empty.
    """
    if isinstance(long_side, bool) or not isinstance(long_side, int) or long_side < 1:
        raise InputError(f"resize={long_side!r}; it must be a positive int (pixels)")
    h, w = gray.shape[:2]
    scale = long_side / max(h, w)
    new_w = round(w * scale) // divisor * divisor
    new_h = round(h * scale) // divisor * divisor
    if new_w == 0 or new_h == 0:
        raise InputError(
            f"a {w}x{h} image resized to long side {long_side} has an empty side (each side is "
            f"floored to a multiple of {divisor}); use a larger resize"
        )
    if (new_w, new_h) == (w, h):
        return gray, (1.0, 1.0)
    resized = cv2.resize(gray, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return resized, (w / new_w, h / new_h)
