"""Two-view geometry for evaluating matches: relative pose, pose error, epipolar distance.

These follow the official LoFTR evaluation code (spec §6.1/§6.2) so numbers line up with the
paper protocol:

* :func:`estimate_pose` normalises the keypoints with their intrinsics, runs OpenCV's RANSAC
  essential-matrix estimator with a pixel threshold divided by the mean focal length (0.5 px and
  confidence 0.99999 by default) and keeps, among the returned E candidates, the pose that
  :func:`cv2.recoverPose` reports with the most inliers. OpenCV is called exactly the way the
  original calls it (the RANSAC mask buffer is shared by every ``recoverPose`` call).
  With ``estimator="poselib"`` it runs PoseLib's LO-RANSAC instead (threshold in pixels,
  1.0 by default; the estimator glue-factory and the LightGlue paper evaluate LoFTR with).
* :func:`relative_pose_error` gives the rotation angle error and the translation *direction*
  angle error, folded with ``min(err, 180 - err)`` because the translation sign of an essential
  matrix is ambiguous.
* :func:`symmetric_epipolar_distance` is the *squared* symmetric epipolar distance in normalised
  camera coordinates (what the original thresholds at 5e-4).

All functions take numpy arrays (anything ``np.asarray`` accepts); keypoints are ``(M, 2)``
pixel coordinates ``(x, y)``.
"""

from __future__ import annotations

import logging
import math
import numbers
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from loftr_core.api.optional import require
from loftr_core.errors import InputError

__all__ = [
    "DEFAULT_THRESHOLD_PX",
    "ESTIMATORS",
    "PoseEstimate",
    "check_estimator",
    "estimate_pose",
    "parse_intrinsics",
    "relative_pose_error",
    "symmetric_epipolar_distance",
]

logger = logging.getLogger(__name__)

#: The fewest matches the five-point solver accepts (the original returns failure below this).
MIN_MATCHES_FOR_POSE = 5


@dataclass(frozen=True)
class PoseEstimate:
    """A relative pose estimated from matches.

    Attributes:
        R: ``(3, 3)`` float64 rotation from camera 0 to camera 1.
        t: ``(3,)`` float64 unit translation direction (camera 0 -> camera 1; sign ambiguous).
        inliers: ``(M,)`` bool RANSAC inlier mask over the input matches.
    """

    R: np.ndarray
    t: np.ndarray
    inliers: np.ndarray

    @property
    def num_inliers(self) -> int:
        """Number of RANSAC inliers."""
        return int(self.inliers.sum())


def parse_intrinsics(value: Any, name: str = "K") -> np.ndarray:
    """Turn intrinsics given in any common form into a ``(3, 3)`` float64 matrix.

    Args:
        value: a ``(3, 3)`` matrix, 9 numbers (row-major), 4 numbers ``fx, fy, cx, cy``, or a
            string of 4 or 9 numbers separated by commas and/or spaces.
        name: what to call the value in error messages (e.g. ``"K0"``).

    Returns:
        ``(3, 3)`` float64 camera matrix.

    Raises:
        InputError: the value does not have 4 or 9 finite numbers, or the focal lengths are not
            positive.
    """
    if isinstance(value, str):
        parts = value.replace(",", " ").split()
        try:
            numbers = np.array([float(p) for p in parts], dtype=np.float64)
        except ValueError:
            raise InputError(
                f"{name}={value!r} is not a list of numbers; give 'fx,fy,cx,cy' or 9 numbers "
                "of a row-major 3x3 matrix"
            ) from None
    else:
        try:
            numbers = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(
                f"{name} must be numeric (a 3x3 matrix, 9 or 4 numbers), got {type(value).__name__}"
            ) from None
    if numbers.size == 4 and numbers.ndim <= 1:
        fx, fy, cx, cy = numbers
        K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    elif numbers.size == 9 and numbers.shape in {(9,), (3, 3)}:
        K = numbers.reshape(3, 3)
    else:
        raise InputError(
            f"{name} has shape {tuple(numbers.shape)} ({numbers.size} numbers); intrinsics must "
            "be a 3x3 matrix, 9 row-major numbers or 4 numbers fx,fy,cx,cy"
        )
    if not np.all(np.isfinite(K)):
        raise InputError(f"{name} contains non-finite values: {K.tolist()}")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise InputError(
            f"{name} has focal lengths fx={K[0, 0]}, fy={K[1, 1]}; both must be positive"
        )
    return K


def _keypoints(value: Any, name: str) -> np.ndarray:
    kpts = np.asarray(value, dtype=np.float64)
    if kpts.ndim != 2 or kpts.shape[1] != 2:
        raise InputError(f"{name} must have shape (M, 2) (x, y pixels), got {tuple(kpts.shape)}")
    return kpts


def _normalise(kpts: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pixel ``(M, 2)`` -> normalised camera coordinates ``(M, 2)``: ((x-cx)/fx, (y-cy)/fy)."""
    return (kpts - K[[0, 1], [2, 2]][None]) / K[[0, 1], [0, 1]][None]


ESTIMATORS = ("opencv", "poselib")
"""Relative pose estimators by name: ``opencv`` (RANSAC, the LoFTR paper's protocol) and
``poselib`` (PoseLib's LO-RANSAC with local refinement, as glue-factory evaluates)."""
DEFAULT_THRESHOLD_PX = {"opencv": 0.5, "poselib": 1.0}
"""Default inlier threshold in pixels per estimator (0.5: the paper's; 1.0: glue-factory's)."""


def check_estimator(name: str) -> str:
    """``name`` if it is one of :data:`ESTIMATORS`, else one :class:`InputError` line."""
    if name not in ESTIMATORS:
        raise InputError(f"unknown pose estimator {name!r}; choose one of {list(ESTIMATORS)}")
    return name


def estimate_pose(
    kpts0: Any,
    kpts1: Any,
    K0: Any,
    K1: Any,
    *,
    threshold_px: float | None = None,
    confidence: float = 0.99999,
    estimator: str = "opencv",
    seed: int | None = None,
) -> PoseEstimate | None:
    """Estimate the relative pose of two calibrated views from matches.

    Args:
        kpts0: ``(M, 2)`` pixel keypoints in image 0.
        kpts1: ``(M, 2)`` matching pixel keypoints in image 1.
        K0: intrinsics of image 0 (anything :func:`parse_intrinsics` accepts).
        K1: intrinsics of image 1.
        threshold_px: inlier threshold in pixels (default :data:`DEFAULT_THRESHOLD_PX` of the
            estimator). OpenCV: divided by the mean focal length
            ``mean(K0[0,0], K1[1,1], K0[0,0], K1[1,1])`` as the original does; PoseLib: its
            ``max_epipolar_error`` in pixels.
        confidence: RANSAC confidence (success probability).
        estimator: ``"opencv"`` (LoFTR's protocol: RANSAC on the essential matrix, the
            :func:`cv2.recoverPose` candidate with the most inliers) or ``"poselib"`` (LO-RANSAC,
            ``pip install 'loftr-core[poselib]'``).
        seed: PoseLib's RANSAC seed (None: its default). OpenCV's RANSAC needs none: it seeds
            its own generator with a fixed value on every call, so its result is deterministic.

    Returns:
        The pose, or ``None`` when there are fewer than 5 matches or no pose is found.

    Raises:
        InputError: keypoints not ``(M, 2)``, different numbers of keypoints, bad intrinsics,
            an unknown estimator or a threshold that is not a positive number.
    """
    check_estimator(estimator)
    thr = DEFAULT_THRESHOLD_PX[estimator] if threshold_px is None else threshold_px
    if isinstance(thr, bool) or not isinstance(thr, numbers.Real) or not 0 < thr < math.inf:
        raise InputError(f"threshold_px={threshold_px!r}; it must be a positive number of pixels")
    p0 = _keypoints(kpts0, "kpts0")
    p1 = _keypoints(kpts1, "kpts1")
    if len(p0) != len(p1):
        raise InputError(f"kpts0 has {len(p0)} points but kpts1 has {len(p1)}; they must pair up")
    K0m = parse_intrinsics(K0, "K0")
    K1m = parse_intrinsics(K1, "K1")
    if len(p0) < MIN_MATCHES_FOR_POSE:
        logger.debug("estimate_pose: %d matches < %d, no pose", len(p0), MIN_MATCHES_FOR_POSE)
        return None
    if estimator == "poselib":
        return _poselib_pose(p0, p1, K0m, K1m, float(thr), confidence, seed)
    # OpenCV's RANSAC seeds its own generator with a fixed value on every call: deterministic,
    # whatever ``seed`` says (cv2.setRNGSeed would not reach it)
    threshold_px = float(thr)
    n0 = _normalise(p0, K0m)
    n1 = _normalise(p1, K1m)
    ransac_thr = threshold_px / float(np.mean([K0m[0, 0], K1m[1, 1], K0m[0, 0], K1m[1, 1]]))
    try:
        E, mask = cv2.findEssentialMat(
            n0, n1, np.eye(3), threshold=ransac_thr, prob=confidence, method=cv2.RANSAC
        )
        if E is None or mask is None:
            return None
        best: PoseEstimate | None = None
        best_n = 0
        for E_k in np.split(E, len(E) // 3):
            # The return arity differs across OpenCV versions (4 or 5 values): index, don't unpack.
            result = cv2.recoverPose(E_k, n0, n1, np.eye(3), 1e9, mask=mask)
            n, R, t = int(result[0]), np.asarray(result[1]), np.asarray(result[2])
            if n > best_n:
                best_n = n
                best = PoseEstimate(R=R.copy(), t=t[:, 0].copy(), inliers=mask.ravel() > 0)
    except cv2.error as exc:
        # OpenCV 5.1.0's five-point solver asserts (solvePoly) on some near-degenerate match
        # sets that 4.x and 5.0 accept: a pose that cannot be estimated, not a crash
        reason = str(exc).strip().splitlines()[-1][:160]
        logger.warning(
            "estimate_pose: OpenCV %s could not estimate a pose from %d matches (%s); no pose "
            "for this pair (estimator='poselib' is another option)",
            cv2.__version__,
            len(p0),
            reason,
        )
        return None
    return best


def _poselib_pose(
    p0: np.ndarray,
    p1: np.ndarray,
    K0: np.ndarray,
    K1: np.ndarray,
    threshold_px: float,
    confidence: float,
    seed: int | None,
) -> PoseEstimate | None:
    """PoseLib's LO-RANSAC relative pose (pinhole cameras from ``K0``/``K1``)."""
    poselib = require("poselib", "poselib")

    def camera(K: np.ndarray, pts: np.ndarray) -> dict[str, Any]:
        # the size only bounds PoseLib's sanity checks; a principal point at the centre
        w = max(2.0 * K[0, 2], float(pts[:, 0].max()) + 1.0)
        h = max(2.0 * K[1, 2], float(pts[:, 1].max()) + 1.0)
        params = [K[0, 0], K[1, 1], K[0, 2], K[1, 2]]
        return {"model": "PINHOLE", "width": int(w), "height": int(h), "params": params}

    ransac: dict[str, Any] = {"max_epipolar_error": threshold_px, "success_prob": confidence}
    if seed is not None:
        ransac["seed"] = int(seed)
    pose, info = poselib.estimate_relative_pose(p0, p1, camera(K0, p0), camera(K1, p1), ransac, {})
    inliers = np.asarray(info.get("inliers", []), bool)
    if inliers.shape != (len(p0),) or not inliers.any():
        return None
    t = np.asarray(pose.t, np.float64)
    norm = float(np.linalg.norm(t))
    if not norm > 0:
        return None
    return PoseEstimate(R=np.asarray(pose.R, np.float64), t=t / norm, inliers=inliers)


def _pose_parts(T_or_R: Any, t: Any | None) -> tuple[np.ndarray, np.ndarray]:
    if t is None:
        T = np.asarray(T_or_R, dtype=np.float64)
        if T.shape not in {(4, 4), (3, 4)}:
            raise InputError(
                f"T_0to1 must be a 4x4 or 3x4 rigid transform, got shape {tuple(T.shape)}"
            )
        return T[:3, :3], T[:3, 3]
    R = np.asarray(T_or_R, dtype=np.float64)
    tt = np.asarray(t, dtype=np.float64).reshape(-1)
    if R.shape != (3, 3) or tt.shape != (3,):
        raise InputError(
            f"R must be 3x3 and t 3 numbers, got R {tuple(R.shape)} and t {tuple(tt.shape)}"
        )
    return R, tt


def relative_pose_error(
    T_0to1: Any, R: Any, t: Any, *, ignore_gt_t_thr: float = 0.0
) -> tuple[float, float]:
    """Angular errors of an estimated pose against ground truth (degrees).

    Args:
        T_0to1: ground-truth ``(4, 4)`` (or ``(3, 4)``) transform from camera 0 to camera 1.
        R: ``(3, 3)`` estimated rotation.
        t: ``(3,)`` estimated translation (any scale).
        ignore_gt_t_thr: when the ground-truth translation is shorter than this, the translation
            error is reported as 0 (the original's convention for pure rotations).

    Returns:
        ``(R_err, t_err)`` in degrees; ``t_err`` is folded to ``min(err, 180 - err)``.
    """
    R_gt, t_gt = _pose_parts(T_0to1, None)
    R_est, t_est = _pose_parts(R, t)
    denom = max(float(np.linalg.norm(t_gt) * np.linalg.norm(t_est)), 1e-12)
    t_err = float(np.rad2deg(np.arccos(np.clip(np.dot(t_gt, t_est) / denom, -1.0, 1.0))))
    t_err = min(t_err, 180.0 - t_err)
    if np.linalg.norm(t_gt) < ignore_gt_t_thr:
        t_err = 0.0
    cos = (np.trace(R_est.T @ R_gt) - 1.0) / 2.0
    R_err = float(np.rad2deg(np.abs(np.arccos(np.clip(cos, -1.0, 1.0)))))
    return R_err, t_err


def _skew(v: np.ndarray) -> np.ndarray:
    return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


def symmetric_epipolar_distance(
    kpts0: Any, kpts1: Any, T_0to1: Any, K0: Any, K1: Any
) -> np.ndarray:
    """Squared symmetric epipolar distance of each match, in normalised camera coordinates.

    ``d = (x1ᵀ E x0)² · (1 / ((E x0)₀² + (E x0)₁²) + 1 / ((Eᵀ x1)₀² + (Eᵀ x1)₁²))`` with
    ``E = [t]ₓ R`` from ``T_0to1`` and points normalised by their own intrinsics (spec §6.1).
    The original counts a match as correct when ``d < 5e-4``.

    Args:
        kpts0: ``(M, 2)`` pixel keypoints in image 0.
        kpts1: ``(M, 2)`` pixel keypoints in image 1.
        T_0to1: ``(4, 4)`` ground-truth transform from camera 0 to camera 1.
        K0: intrinsics of image 0.
        K1: intrinsics of image 1.

    Returns:
        ``(M,)`` float64 squared distances (``inf`` where an epipolar line is degenerate).
    """
    p0 = _keypoints(kpts0, "kpts0")
    p1 = _keypoints(kpts1, "kpts1")
    if len(p0) != len(p1):
        raise InputError(f"kpts0 has {len(p0)} points but kpts1 has {len(p1)}; they must pair up")
    R, t = _pose_parts(T_0to1, None)
    E = _skew(t) @ R
    x0 = np.concatenate([_normalise(p0, parse_intrinsics(K0, "K0")), np.ones((len(p0), 1))], 1)
    x1 = np.concatenate([_normalise(p1, parse_intrinsics(K1, "K1")), np.ones((len(p1), 1))], 1)
    Ex0 = x0 @ E.T  # (M, 3)
    Etx1 = x1 @ E  # (M, 3)
    x1Ex0 = np.sum(x1 * Ex0, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = x1Ex0**2 * (
            1.0 / (Ex0[:, 0] ** 2 + Ex0[:, 1] ** 2) + 1.0 / (Etx1[:, 0] ** 2 + Etx1[:, 1] ** 2)
        )
    return np.where(np.isnan(d), np.inf, d)
