"""Procedurally generated grayscale textures with enough structure to learn matching from.

A texture layers smooth low-frequency shading, blurred multi-scale noise, checkerboard patches,
random filled shapes (circles, ellipses, rectangles, polygons) and random lines, then applies a
light anti-aliasing blur. Every texture is a pure function of the random generator passed in.
"""

from __future__ import annotations

import cv2
import numpy as np

from loftr_data.errors import DataConfigError

__all__ = ["procedural_texture"]


def _smooth_noise(rng: np.random.Generator, width: int, height: int, cell: int) -> np.ndarray:
    """Random values on a coarse grid of ``cell``-px cells, bicubically upsampled; float32 ~[0, 1]."""
    gw, gh = max(2, width // cell + 2), max(2, height // cell + 2)
    grid = rng.random((gh, gw), dtype=np.float32)
    return np.asarray(cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC))


def procedural_texture(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Draw one random texture.

    Args:
        rng: the random generator (the texture depends only on its state).
        width: texture width in pixels (>= 16).
        height: texture height in pixels (>= 16).

    Returns:
        ``(height, width)`` uint8 grayscale image.
    """
    if width < 16 or height < 16:
        raise DataConfigError(f"texture size must be at least 16x16, got {width}x{height} (WxH)")
    area_scale = (width * height) / (640 * 480)
    img = 60.0 + 130.0 * _smooth_noise(rng, width, height, cell=int(rng.integers(64, 192)))
    img += 50.0 * (_smooth_noise(rng, width, height, cell=int(rng.integers(6, 16))) - 0.5)
    canvas = np.clip(img, 0, 255).astype(np.uint8)

    # Checkerboard patches of random cell size and contrast.
    for _ in range(int(rng.integers(1, 4))):
        cell = int(rng.integers(5, 20))
        pw = int(rng.integers(width // 8, width // 3 + 1))
        ph = int(rng.integers(height // 8, height // 3 + 1))
        x0 = int(rng.integers(0, width - pw + 1))
        y0 = int(rng.integers(0, height - ph + 1))
        yy, xx = np.mgrid[0:ph, 0:pw]
        board = ((yy // cell + xx // cell) % 2).astype(bool)
        lo, hi = sorted(int(v) for v in rng.integers(0, 256, size=2))
        canvas[y0 : y0 + ph, x0 : x0 + pw] = np.where(board, hi, max(0, lo - 20))

    # Filled shapes.
    n_shapes = max(4, int(rng.integers(20, 45) * area_scale))
    for _ in range(n_shapes):
        color = int(rng.integers(0, 256))
        cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
        size = int(rng.integers(4, max(6, min(width, height) // 6)))
        kind = int(rng.integers(0, 4))
        if kind == 0:
            cv2.circle(canvas, (cx, cy), size, color, -1, cv2.LINE_AA)
        elif kind == 1:
            axes = (size, max(2, int(size * rng.uniform(0.3, 1.0))))
            angle = float(rng.uniform(0, 180))
            cv2.ellipse(canvas, (cx, cy), axes, angle, 0, 360, color, -1, cv2.LINE_AA)
        elif kind == 2:
            w2, h2 = size, max(2, int(size * rng.uniform(0.3, 1.5)))
            cv2.rectangle(canvas, (cx - w2, cy - h2), (cx + w2, cy + h2), color, -1)
        else:
            n = int(rng.integers(3, 7))
            angles = np.sort(rng.uniform(0, 2 * np.pi, n))
            radii = size * rng.uniform(0.4, 1.0, n)
            pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1)
            cv2.fillPoly(canvas, [pts.astype(np.int32)], color, cv2.LINE_AA)

    # Lines.
    for _ in range(max(3, int(rng.integers(10, 30) * area_scale))):
        p0 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        p1 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.line(canvas, p0, p1, int(rng.integers(0, 256)), int(rng.integers(1, 4)), cv2.LINE_AA)

    return np.asarray(cv2.GaussianBlur(canvas, (3, 3), 0.8))
