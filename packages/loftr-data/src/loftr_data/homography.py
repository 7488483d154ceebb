"""A synthetic homography dataset: pairs of views of one image related by a random homography.

Each sample renders two views of a source image (a photo from a folder, or a procedural texture):
image 0 is a random axis-aligned crop resized to the output size, image 1 the same crop moved by a
random homography ``H_0to1`` (rotation, log-uniform scale, translation, perspective, composed about
the image centre). Both views are resampled once from the source, so neither is blurred twice.
Homographies are drawn so that every pixel of image 1 sees source content (the four corners map
inside the source and no horizon crosses the image), so image 1 never has empty areas and the
samples carry no padding masks. Each image is then photometrically augmented independently.

A sample is a pure function of ``(seed, index)``: the generator is
``np.random.default_rng([seed, index])``, so results do not depend on workers or order.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from loftr_data.errors import DataConfigError
from loftr_data.photometric import PhotometricConfig, photometric_augment
from loftr_data.preprocess import read_gray
from loftr_data.textures import procedural_texture

__all__ = [
    "IMAGE_EXTENSIONS",
    "HomographyConfig",
    "SyntheticHomographyDataset",
    "random_homography",
    "render_pair",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_MAX_TRIES = 40


@dataclass(frozen=True)
class HomographyConfig:
    """Ranges of the random homography, in coordinates centred on the image and divided by half
    its long side (so corners lie near +-1).

    Attributes:
        max_rotation_deg: rotation drawn from ``U(-max, max)`` degrees.
        scale_range: ``(lo, hi)``; the scale is log-uniform in it.
        max_translation: translation per axis from ``U(-max, max)`` (normalised units).
        max_perspective: the two perspective terms from ``U(-max, max)`` (normalised units).
        crop_scale_range: image 0 shows a crop of ``f`` times the largest source window of the
            output aspect ratio, ``f ~ U(lo, hi)``; the margin lets image 1 stay inside the source.
    """

    max_rotation_deg: float = 25.0
    scale_range: tuple[float, float] = (0.8, 1.25)
    max_translation: float = 0.1
    max_perspective: float = 0.1
    crop_scale_range: tuple[float, float] = (0.5, 0.75)

    def __post_init__(self) -> None:
        for name in ("max_rotation_deg", "max_translation", "max_perspective"):
            value = getattr(self, name)
            if not value >= 0:
                raise DataConfigError(f"HomographyConfig.{name} must be >= 0, got {value!r}")
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise DataConfigError(
                f"HomographyConfig.scale_range must satisfy 0 < lo <= hi, got {self.scale_range}"
            )
        lo, hi = self.crop_scale_range
        if not 0 < lo <= hi <= 1:
            raise DataConfigError(
                "HomographyConfig.crop_scale_range must satisfy 0 < lo <= hi <= 1, got "
                f"{self.crop_scale_range}"
            )


def random_homography(
    rng: np.random.Generator, width: int, height: int, config: HomographyConfig, amount: float = 1.0
) -> np.ndarray:
    """Draw a homography of a ``width x height`` image about its centre.

    Args:
        rng: random generator.
        width: image width in pixels.
        height: image height in pixels.
        config: parameter ranges.
        amount: factor in [0, 1] shrinking every range toward the identity.

    Returns:
        ``(3, 3)`` float64 matrix mapping pixels to pixels, normalised so ``H[2, 2] == 1``.
    """
    angle = math.radians(rng.uniform(-1, 1) * config.max_rotation_deg * amount)
    log_lo, log_hi = (math.log(s) for s in config.scale_range)
    scale = math.exp(rng.uniform(log_lo, log_hi) * amount)
    tx, ty = rng.uniform(-1, 1, 2) * config.max_translation * amount
    px, py = rng.uniform(-1, 1, 2) * config.max_perspective * amount
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    a = np.array([[c, -s, tx], [s, c, ty], [px, py, 1.0]])
    half = max(width, height) / 2.0
    norm = np.array(
        [[1 / half, 0, -width / 2 / half], [0, 1 / half, -height / 2 / half], [0, 0, 1]]
    )
    h = np.linalg.inv(norm) @ a @ norm
    return np.asarray(h / h[2, 2])


def _covers(h_out_to_src: np.ndarray, width: int, height: int, src_w: int, src_h: int) -> bool:
    """Whether the whole ``width x height`` output maps inside the source (no horizon crossing)."""
    corners = np.array(
        [[0, 0, 1], [width - 1, 0, 1], [0, height - 1, 1], [width - 1, height - 1, 1]]
    )
    mapped = h_out_to_src @ corners.T.astype(np.float64)
    if not np.all(mapped[2] > 1e-8):
        return False
    x, y = mapped[0] / mapped[2], mapped[1] / mapped[2]
    return bool(np.all((x >= 0) & (x <= src_w - 1) & (y >= 0) & (y <= src_h - 1)))


def render_pair(
    source: np.ndarray,
    rng: np.random.Generator,
    width: int,
    height: int,
    config: HomographyConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render image 0 (a crop of ``source``) and image 1 (the crop moved by a random homography).

    Args:
        source: ``(h, w)`` uint8 grayscale source image.
        rng: random generator.
        width: output width.
        height: output height.
        config: homography and crop ranges.

    Returns:
        ``(image0, image1, H_0to1)``: two ``(height, width)`` uint8 images and the ``(3, 3)``
        float64 homography mapping image-0 pixels to image-1 pixels. Every pixel of both images
        samples the inside of ``source``.
    """
    src_h, src_w = source.shape[:2]
    aspect = width / height
    fit_w = min(float(src_w - 1), (src_h - 1) * aspect)
    crop_w = fit_w * rng.uniform(*config.crop_scale_range)
    crop_h = crop_w / aspect
    x0 = rng.uniform(0, src_w - 1 - crop_w)
    y0 = rng.uniform(0, src_h - 1 - crop_h)
    # Source pixel -> image-0 pixel: the crop [x0, x0 + crop_w] maps onto [0, width - 1].
    sx, sy = (width - 1) / crop_w, (height - 1) / crop_h
    h0 = np.array([[sx, 0, -x0 * sx], [0, sy, -y0 * sy], [0, 0, 1.0]])
    h_0to1 = np.eye(3)
    for attempt in range(_MAX_TRIES):
        candidate = random_homography(rng, width, height, config, amount=0.9**attempt)
        if _covers(np.linalg.inv(candidate @ h0), width, height, src_w, src_h):
            h_0to1 = candidate
            break
    flags = cv2.INTER_LINEAR
    image0 = cv2.warpPerspective(source, h0, (width, height), flags=flags)
    image1 = cv2.warpPerspective(source, h_0to1 @ h0, (width, height), flags=flags)
    return np.asarray(image0), np.asarray(image1), h_0to1


class SyntheticHomographyDataset(Dataset[dict[str, Any]]):
    """Image pairs related by known random homographies (the homography variant of the contract).

    Args:
        image_dir: folder of photos (any grayscale/colour images, searched non-recursively for
            :data:`IMAGE_EXTENSIONS`); None draws procedural textures instead.
        length: number of samples; sample ``i`` uses photo ``i % n_photos``.
        size: output ``(width, height)``, both positive multiples of 8 (default 320 x 240).
        seed: base seed; sample ``i`` depends only on ``(seed, i)``.
        homography: homography and crop ranges.
        photometric: augmentation ranges; None disables augmentation.
        cache_size: how many decoded (downscaled) photos each worker keeps in memory.
        scene_id: value of ``scene_id``; defaults to the folder name or ``"procedural"``.

    Raises:
        DataConfigError: if the folder is missing or holds no images, or a setting is invalid.
    """

    dataset_name = "SyntheticHomography"

    def __init__(
        self,
        image_dir: str | Path | None = None,
        *,
        length: int = 1000,
        size: tuple[int, int] = (320, 240),
        seed: int = 0,
        homography: HomographyConfig | None = None,
        photometric: PhotometricConfig | None = PhotometricConfig(),  # noqa: B008 (frozen)
        cache_size: int = 64,
        scene_id: str | None = None,
    ) -> None:
        if isinstance(length, bool) or not isinstance(length, int) or length <= 0:
            raise DataConfigError(f"length must be a positive int, got {length!r}")
        width, height = (int(v) for v in size)
        if width <= 0 or height <= 0 or width % 8 or height % 8:
            raise DataConfigError(
                f"size must be (width, height) with positive multiples of 8, got {tuple(size)}; "
                "e.g. (320, 240) or (640, 480)"
            )
        self.length = length
        self.width, self.height = width, height
        self.seed = int(seed)
        self.homography = homography if homography is not None else HomographyConfig()
        self.photometric = photometric
        self.cache_size = max(0, int(cache_size))
        self.image_dir = None if image_dir is None else Path(image_dir)
        self.files: list[Path] = []
        if self.image_dir is not None:
            if not self.image_dir.is_dir():
                raise DataConfigError(f"image_dir {self.image_dir} is not a directory")
            self.files = sorted(
                p
                for p in self.image_dir.iterdir()
                if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            )
            if not self.files:
                raise DataConfigError(
                    f"image_dir {self.image_dir} holds no images with the extensions "
                    f"{list(IMAGE_EXTENSIONS)}; give a folder of photos or None for textures"
                )
        default_scene = "procedural" if self.image_dir is None else self.image_dir.name
        self.scene_id = scene_id if scene_id is not None else default_scene
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return self.length

    def _source(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        if not self.files:
            # Twice the output size: crops of 50-75 % then show 1-1.5x downsampled texture.
            return procedural_texture(rng, 2 * self.width, 2 * self.height), "procedural"
        file_idx = index % len(self.files)
        path = self.files[file_idx]
        cached = self._cache.get(file_idx)
        if cached is None:
            image = read_gray(path)
            # Keep about twice the output resolution: enough for the crop, cheap to warp.
            factor = 2.0 * max(self.width / image.shape[1], self.height / image.shape[0])
            if factor < 1.0:
                new_size = (
                    max(16, round(image.shape[1] * factor)),
                    max(16, round(image.shape[0] * factor)),
                )
                image = np.asarray(cv2.resize(image, new_size, interpolation=cv2.INTER_AREA))
            cached = image
            if self.cache_size:
                self._cache[file_idx] = cached
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(file_idx)
        return cached, path.name

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Render sample ``index`` (see :mod:`loftr_data.sample`, homography variant)."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for a dataset of {self.length} samples")
        rng = np.random.default_rng([self.seed, index])
        source, name = self._source(index, rng)
        img0, img1, h_0to1 = render_pair(source, rng, self.width, self.height, self.homography)
        out0 = img0.astype(np.float32) / np.float32(255.0)
        out1 = img1.astype(np.float32) / np.float32(255.0)
        if self.photometric is not None:
            out0 = photometric_augment(out0, rng, self.photometric)
            out1 = photometric_augment(out1, rng, self.photometric)
        ones = torch.ones(2, dtype=torch.float32)
        return {
            "image0": torch.from_numpy(out0).unsqueeze(0),
            "image1": torch.from_numpy(out1).unsqueeze(0),
            "scale0": ones,
            "scale1": ones.clone(),
            "H_0to1": torch.from_numpy(h_0to1.astype(np.float32)),
            "dataset_name": self.dataset_name,
            "scene_id": self.scene_id,
            "pair_id": index,
            "pair_names": (f"{name}#{index}:0", f"{name}#{index}:1"),
        }

    def __repr__(self) -> str:
        src = "procedural" if self.image_dir is None else str(self.image_dir)
        return (
            f"SyntheticHomographyDataset(source={src!r}, length={self.length}, "
            f"size={(self.width, self.height)}, seed={self.seed})"
        )
