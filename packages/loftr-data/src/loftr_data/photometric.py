"""Photometric augmentation: brightness, contrast, Gaussian blur and Gaussian noise."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from loftr_data.errors import DataConfigError

__all__ = ["PhotometricConfig", "photometric_augment"]


@dataclass(frozen=True)
class PhotometricConfig:
    """Ranges of the photometric augmentation (each image of a pair is augmented independently).

    Attributes:
        brightness: additive shift drawn from ``U(-brightness, brightness)`` (image in [0, 1]).
        contrast: contrast factor drawn from ``U(1 - contrast, 1 + contrast)``, about the mean.
        blur_prob: probability of a Gaussian blur.
        max_blur_sigma: the blur sigma is drawn from ``U(0.3, max_blur_sigma)`` px.
        noise_std: the Gaussian noise std is drawn from ``U(0, noise_std)``.
    """

    brightness: float = 0.15
    contrast: float = 0.3
    blur_prob: float = 0.3
    max_blur_sigma: float = 1.5
    noise_std: float = 0.02

    def __post_init__(self) -> None:
        for name in ("brightness", "max_blur_sigma", "noise_std"):
            value = getattr(self, name)
            if not value >= 0:
                raise DataConfigError(f"PhotometricConfig.{name} must be >= 0, got {value!r}")
        if not 0 <= self.contrast < 1:
            raise DataConfigError(
                f"PhotometricConfig.contrast must lie in [0, 1), got {self.contrast!r}"
            )
        if not 0 <= self.blur_prob <= 1:
            raise DataConfigError(
                f"PhotometricConfig.blur_prob must lie in [0, 1], got {self.blur_prob!r}"
            )


def photometric_augment(
    image: np.ndarray, rng: np.random.Generator, config: PhotometricConfig
) -> np.ndarray:
    """Augment one image.

    Args:
        image: ``(H, W)`` float32 in [0, 1].
        rng: random generator (the result depends only on its state and the inputs).
        config: the augmentation ranges.

    Returns:
        A new ``(H, W)`` float32 array in [0, 1].
    """
    out = image.astype(np.float32, copy=True)
    contrast = rng.uniform(1.0 - config.contrast, 1.0 + config.contrast)
    brightness = rng.uniform(-config.brightness, config.brightness)
    mean = float(out.mean())
    out = (out - mean) * np.float32(contrast) + np.float32(mean + brightness)
    blur = rng.random() < config.blur_prob
    sigma = rng.uniform(0.3, max(0.3, config.max_blur_sigma))
    if blur and config.max_blur_sigma > 0:
        out = np.asarray(cv2.GaussianBlur(out, (0, 0), float(sigma)))
    std = rng.uniform(0.0, config.noise_std)
    if std > 0:
        out += rng.standard_normal(out.shape, dtype=np.float32) * np.float32(std)
    return np.clip(out, 0.0, 1.0)
