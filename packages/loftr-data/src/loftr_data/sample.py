"""The training-sample contract: what every loftr-data dataset yields and loftr-train consumes.

One sample is a ``dict[str, object]`` (unbatched). ``H, W`` are the returned image size, both
multiples of 8; ``Hc, Wc = H // 8, W // 8``.

Common keys (every dataset):

==================  ==========================  =============================================
key                 type / shape / dtype        meaning
==================  ==========================  =============================================
``image0``          Tensor (1, H, W) float32    grayscale image 0 in [0, 1] (uint8 / 255)
``image1``          Tensor (1, H, W) float32    grayscale image 1 in [0, 1]
``scale0``          Tensor (2,) float32         ``(orig_w / resized_w, orig_h / resized_h)``:
                                                pixel ``p`` of ``image0`` is pixel ``p * scale0``
                                                of the original image (no half-pixel shift)
``scale1``          Tensor (2,) float32         the same for image 1
``dataset_name``    str                         ``"MegaDepth"`` or ``"SyntheticHomography"``
``scene_id``        str                         scene-info file stem (``"0015_0.1_0.3"``) or the
                                                synthetic source (``"procedural"``/folder name)
``pair_id``         int                         index of the pair in its scene-info file's
                                                ``pair_infos`` (unfiltered), or the sample index
``pair_names``      tuple[str, str]             the two image paths as written in the index
==================  ==========================  =============================================

Padding masks (MegaDepth, which zero-pads to a square; absent from the homography dataset, whose
warp always keeps content):

==================  ==========================  =============================================
``mask0``           Tensor (Hc, Wc) bool        True on coarse cells of real image content
``mask1``           Tensor (Hc, Wc) bool        the same for image 1
==================  ==========================  =============================================

Depth-and-pose geometry (MegaDepth):

==================  ==========================  =============================================
``depth0``          Tensor (2000, 2000) float32 depth of image 0 at its ORIGINAL resolution,
                                                zero-padded bottom/right; 0 = no depth. Only
                                                present when the dataset loads depth.
``depth1``          Tensor (2000, 2000) float32 the same for image 1
``K0``              Tensor (3, 3) float32       intrinsics of the RETURNED image 0:
                                                ``diag(1/scale0[0], 1/scale0[1], 1) @ K_orig``
``K1``              Tensor (3, 3) float32       the same for image 1
``T_0to1``          Tensor (4, 4) float32       camera 0 -> camera 1: ``pose1 @ inv(pose0)``
                                                (poses are world-to-camera)
``T_1to0``          Tensor (4, 4) float32       ``inv(T_0to1)``
==================  ==========================  =============================================

Homography geometry (synthetic dataset):

==================  ==========================  =============================================
``H_0to1``          Tensor (3, 3) float32       maps image-0 pixels to image-1 pixels, both in
                                                returned-image coordinates: ``x1 ~ H_0to1 @ x0``
==================  ==========================  =============================================

Using depth with the scaled intrinsics: for a pixel ``p`` (x, y) of the returned image 0, its depth
is ``d = depth0[round(p_y * scale0[1]), round(p_x * scale0[0])]`` and its 3-D point in camera 0 is
``d * inv(K0) @ (p_x, p_y, 1)``. Because ``K0`` is already scaled, do NOT multiply ``p`` by
``scale0`` before applying ``inv(K0)`` (the original code does that with the unscaled K; doing both
is the classic wrong-scale bug that leaves almost no ground-truth matches).

Batched by :func:`loftr_data.collate`: tensors gain a leading batch dim ``N``; ``dataset_name`` and
``scene_id`` become ``list[str]``; ``pair_id`` becomes a Tensor ``(N,)`` int64; ``pair_names``
becomes ``list[tuple[str, str]]`` (one tuple per sample).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from loftr_data.errors import LoftrDataError

__all__ = [
    "COMMON_KEYS",
    "DEPTH_KEYS",
    "HOMOGRAPHY_KEYS",
    "MASK_KEYS",
    "POSE_KEYS",
    "SampleContractError",
    "validate_sample",
]

COMMON_KEYS: tuple[str, ...] = (
    "image0",
    "image1",
    "scale0",
    "scale1",
    "dataset_name",
    "scene_id",
    "pair_id",
    "pair_names",
)
MASK_KEYS: tuple[str, ...] = ("mask0", "mask1")
DEPTH_KEYS: tuple[str, ...] = ("depth0", "depth1")
POSE_KEYS: tuple[str, ...] = ("K0", "K1", "T_0to1", "T_1to0")
HOMOGRAPHY_KEYS: tuple[str, ...] = ("H_0to1",)


class SampleContractError(LoftrDataError, ValueError):
    """A sample does not follow the contract of :mod:`loftr_data.sample`."""


def _check_tensor(
    sample: Mapping[str, object], key: str, shape: tuple[int, ...], dtype: torch.dtype
) -> None:
    value = sample[key]
    if not isinstance(value, torch.Tensor):
        raise SampleContractError(
            f"sample[{key!r}] must be a torch.Tensor, got {type(value).__name__}"
        )
    if tuple(value.shape) != shape or value.dtype != dtype:
        raise SampleContractError(
            f"sample[{key!r}] must have shape {shape} and dtype {dtype}, "
            f"got shape {tuple(value.shape)} and dtype {value.dtype}"
        )


def validate_sample(sample: Mapping[str, object]) -> None:
    """Check one unbatched sample against the contract above.

    Args:
        sample: a dict as returned by a loftr-data dataset's ``__getitem__``.

    Raises:
        SampleContractError: naming the first key that is missing or has the wrong type, shape,
            dtype or value range.
    """
    missing = [k for k in COMMON_KEYS if k not in sample]
    if missing:
        raise SampleContractError(
            f"sample lacks the keys {missing}; every sample needs {list(COMMON_KEYS)}"
        )
    image0 = sample["image0"]
    if not isinstance(image0, torch.Tensor) or image0.ndim != 3:
        raise SampleContractError("sample['image0'] must be a (1, H, W) float32 tensor")
    _, h, w = image0.shape
    if h % 8 or w % 8:
        raise SampleContractError(f"image size {h}x{w} (HxW) must be a multiple of 8 on both sides")
    for key in ("image0", "image1"):
        _check_tensor(sample, key, (1, h, w), torch.float32)
        img = sample[key]
        if isinstance(img, torch.Tensor) and (float(img.min()) < 0.0 or float(img.max()) > 1.0):
            raise SampleContractError(f"sample[{key!r}] must lie in [0, 1]")
    for key in ("scale0", "scale1"):
        _check_tensor(sample, key, (2,), torch.float32)
    for key in ("dataset_name", "scene_id"):
        if not isinstance(sample[key], str):
            raise SampleContractError(f"sample[{key!r}] must be a str")
    if not isinstance(sample["pair_id"], int):
        raise SampleContractError("sample['pair_id'] must be an int")
    names = sample["pair_names"]
    if not (
        isinstance(names, tuple) and len(names) == 2 and all(isinstance(n, str) for n in names)
    ):
        raise SampleContractError("sample['pair_names'] must be a tuple of two str")
    if any(k in sample for k in MASK_KEYS):
        for key in MASK_KEYS:
            if key not in sample:
                raise SampleContractError(f"sample has one padding mask but lacks {key!r}")
            _check_tensor(sample, key, (h // 8, w // 8), torch.bool)
    has_pose = any(k in sample for k in POSE_KEYS)
    has_h = "H_0to1" in sample
    if has_pose == has_h:
        raise SampleContractError(
            "sample must carry exactly one kind of geometry: K0/K1/T_0to1/T_1to0 (depth variant) "
            "or H_0to1 (homography variant)"
        )
    if has_pose:
        for key in POSE_KEYS:
            if key not in sample:
                raise SampleContractError(f"depth-variant sample lacks {key!r}")
            _check_tensor(sample, key, (3, 3) if key.startswith("K") else (4, 4), torch.float32)
        for key in DEPTH_KEYS:
            if key in sample:
                _check_tensor(sample, key, (2000, 2000), torch.float32)
    else:
        _check_tensor(sample, "H_0to1", (3, 3), torch.float32)
