"""Match plots drawn with OpenCV (no matplotlib): two images side by side, one line per match.

Lines are coloured by confidence (OpenCV's JET colormap: blue = low, red = high, as the
original's ``cm.jet``) or, when per-match epipolar errors against ground truth are given, green
for a correct match (error below the threshold, 5e-4 as the original evaluation) and red
otherwise. A caption in the top-left corner gives the number of matches and, when known, the
inliers / correct matches.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from loftr_core.api.image_io import ImageLike, to_gray
from loftr_core.errors import InputError

__all__ = ["draw_matches", "save_plot"]

GREEN = (0, 255, 0)  # BGR
RED = (0, 0, 255)
_GAP = 10  # px of white between the two images


def _as_bgr(image: ImageLike, name: str) -> np.ndarray:
    if isinstance(image, (str, os.PathLike)):
        to_gray(image, name=name)  # validates the file with clear errors
        colour = cv2.imread(str(image), cv2.IMREAD_COLOR)
        if colour is not None:
            return colour
    if isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3:
        rgb = image if image.dtype == np.uint8 else np.clip(image * 255.0, 0, 255).astype(np.uint8)
        return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
    gray = to_gray(image, name=name)
    if gray.dtype != np.uint8:
        gray = np.clip(np.rint(gray * 255.0), 0, 255).astype(np.uint8)
    return cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)


def _points(value: Any, name: str) -> np.ndarray:
    pts = np.asarray(value, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise InputError(f"{name} must have shape (M, 2), got {tuple(pts.shape)}")
    return pts


def _caption(canvas: np.ndarray, lines: Sequence[str]) -> None:
    """White text on a half-transparent dark box in the top-left corner."""
    lines = [line for line in lines if line]
    if not lines:
        return
    scale = max(0.5, min(1.2, canvas.shape[0] / 640.0))
    thickness = max(1, round(scale * 2))
    step = int(30 * scale)
    font = cv2.FONT_HERSHEY_SIMPLEX
    width = max(cv2.getTextSize(line, font, scale, thickness)[0][0] for line in lines)
    x1 = min(canvas.shape[1], 16 + width)
    y1 = min(canvas.shape[0], step * len(lines) + step // 2)
    box = canvas[:y1, :x1]
    box[:] = (box.astype(np.float32) * 0.45).astype(np.uint8)
    for i, line in enumerate(lines):
        org = (8, step * (i + 1))
        cv2.putText(canvas, line, org, font, scale, (255, 255, 255), thickness, cv2.LINE_AA)


def draw_matches(
    image0: ImageLike,
    image1: ImageLike,
    kpts0: Any,
    kpts1: Any,
    *,
    confidence: Any | None = None,
    epipolar_errors: Any | None = None,
    epipolar_threshold: float = 5e-4,
    inliers: Any | None = None,
    title: str = "LoFTR",
    extra_lines: Sequence[str] = (),
) -> np.ndarray:
    """Draw matches between two images side by side.

    Args:
        image0: left image (path, numpy array or tensor; paths are drawn in colour).
        image1: right image.
        kpts0: ``(M, 2)`` keypoints in image 0 pixels.
        kpts1: ``(M, 2)`` matching keypoints in image 1 pixels.
        confidence: ``(M,)`` scores in [0, 1] for the JET colouring (default: all 1).
        epipolar_errors: ``(M,)`` errors against ground truth (e.g. from
            :func:`loftr_core.api.geometry.symmetric_epipolar_distance`); when given, lines are green
            below ``epipolar_threshold`` and red otherwise.
        epipolar_threshold: correctness threshold on ``epipolar_errors``.
        inliers: ``(M,)`` bool mask (e.g. RANSAC inliers) reported in the caption.
        title: first caption line.
        extra_lines: more caption lines (e.g. the pose error).

    Returns:
        ``(max(H0, H1), W0 + 10 + W1, 3)`` uint8 BGR image.
    """
    left, right = _as_bgr(image0, "image0"), _as_bgr(image1, "image1")
    p0, p1 = _points(kpts0, "kpts0"), _points(kpts1, "kpts1")
    m = len(p0)
    if len(p1) != m:
        raise InputError(f"kpts0 has {m} points but kpts1 has {len(p1)}; they must pair up")
    (h0, w0), (h1, w1) = left.shape[:2], right.shape[:2]
    canvas = np.full((max(h0, h1), w0 + _GAP + w1, 3), 255, np.uint8)
    canvas[:h0, :w0] = left
    canvas[:h1, w0 + _GAP :] = right

    lines = [title, f"Matches: {m}"]
    if epipolar_errors is not None:
        err = np.asarray(epipolar_errors, dtype=np.float64).reshape(-1)
        if len(err) != m:
            raise InputError(f"epipolar_errors has {len(err)} values for {m} matches")
        correct = err < epipolar_threshold
        colours: np.ndarray = np.where(correct[:, None], np.array(GREEN), np.array(RED))
        lines.append(f"Correct (epi < {epipolar_threshold:g}): {int(correct.sum())}/{m}")
    else:
        conf = np.ones(m) if confidence is None else np.asarray(confidence, np.float64).reshape(-1)
        if len(conf) != m:
            raise InputError(f"confidence has {len(conf)} values for {m} matches")
        levels = np.clip(np.rint(conf * 255.0), 0, 255).astype(np.uint8).reshape(-1, 1)
        colours = (
            cv2.applyColorMap(levels, cv2.COLORMAP_JET).reshape(-1, 3)
            if m
            else np.zeros((0, 3), np.uint8)
        )
    if inliers is not None:
        mask = np.asarray(inliers, dtype=bool).reshape(-1)
        if len(mask) != m:
            raise InputError(f"inliers has {len(mask)} values for {m} matches")
        lines.append(f"Inliers: {int(mask.sum())}/{m}")
    lines.extend(extra_lines)

    offset = np.array([w0 + _GAP, 0.0])
    # draw low-confidence / wrong matches first so the good ones stay on top
    order = (
        np.argsort(np.asarray(confidence, np.float64).reshape(-1))
        if (confidence is not None and epipolar_errors is None)
        else np.arange(m)
    )
    for i in order:
        a = tuple(int(v) for v in np.rint(p0[i]))
        b = tuple(int(v) for v in np.rint(p1[i] + offset))
        colour = tuple(int(c) for c in colours[i])
        cv2.line(canvas, a, b, colour, 1, cv2.LINE_AA)
        cv2.circle(canvas, a, 2, colour, -1, cv2.LINE_AA)
        cv2.circle(canvas, b, 2, colour, -1, cv2.LINE_AA)
    _caption(canvas, lines)
    return canvas


def save_plot(image: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Write a plot as PNG (parent folders are created).

    Raises:
        InputError: the path does not end in ``.png`` or OpenCV cannot write it.
    """
    out = Path(path)
    if out.suffix.lower() != ".png":
        raise InputError(f"plot path {str(out)!r} must end in .png (plots are written as PNG)")
    out.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(".png", image)
    if not ok:  # pragma: no cover - imencode fails only on invalid arrays
        raise InputError(f"cannot encode a plot of shape {image.shape} as PNG")
    out.write_bytes(data.tobytes())
    return out
