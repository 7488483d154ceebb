"""From pair matches to what 3-D pipelines read: one keypoint list per image, hloc's files.

LoFTR gives every pair its own keypoints. Structure-from-motion needs one keypoint array per
image so that a point seen in several pairs becomes one track. :func:`merge_keypoints` snaps every
matched keypoint to a grid of ``grid`` px (``round(xy / grid) * grid``; ``grid=0`` merges only
identical coordinates), keeps one keypoint per grid cell and image, and re-expresses each pair's
matches as index pairs into those arrays (a match that lands twice on the same two keypoints
keeps its best score). Keypoints are in the matcher's output convention: original image pixels,
as ``Matcher`` returns them.

:func:`write_hloc` writes hloc's two files: ``features.h5`` (per image name a group with
``keypoints`` ``(N, 2)`` float32 and ``image_size`` ``(2,)`` = width, height) and ``matches.h5``
(per pair the group ``names_to_pair(name0, name1)`` = ``name0/name1`` with ``/`` inside a name
replaced by ``-``, holding ``matches0`` ``(N0,)`` int32, the image-1 keypoint of each image-0
keypoint or -1, and ``matching_scores0`` ``(N0,)`` float16), which hloc's ``triangulation`` /
``reconstruction`` and ``localize_sfm`` read as they are. Needs ``h5py``
(``pip install 'loftr-core[hloc]'``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from loftr_core.api.optional import require
from loftr_core.errors import ConfigError, InputError

__all__ = [
    "MergedMatches",
    "PairMatches",
    "hloc_pair_name",
    "merge_keypoints",
    "to_matches0",
    "write_hloc",
]


@dataclass(frozen=True)
class PairMatches:
    """The matches of one pair: ``(M, 2)`` keypoints in each image (pixels), ``(M,)`` scores."""

    name0: str
    name1: str
    keypoints0: np.ndarray
    keypoints1: np.ndarray
    scores: np.ndarray


@dataclass
class MergedMatches:
    """One keypoint array per image and each pair's matches as indices into them.

    Attributes:
        keypoints: image name -> ``(N, 2)`` float32 grid-snapped keypoints (x, y).
        matches: ``(name0, name1)`` -> ``(K, 2)`` int32 indices into ``keypoints[name0]`` and
            ``keypoints[name1]``, unique rows, in the pair's match order.
        scores: ``(name0, name1)`` -> ``(K,)`` float32 (the best of matches merged together).
        image_sizes: image name -> ``(width, height)`` where known.
        grid: the snapping grid in px.
    """

    keypoints: dict[str, np.ndarray]
    matches: dict[tuple[str, str], np.ndarray]
    scores: dict[tuple[str, str], np.ndarray]
    image_sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    grid: float = 1.0


def _snap(points: np.ndarray, grid: float) -> np.ndarray:
    """``(M, 2)`` float -> ``(M, 2)`` int64 grid cells (``grid=0``: the float32 bits)."""
    points = np.asarray(points, np.float32).reshape(-1, 2)
    if grid == 0:
        return np.ascontiguousarray(points).view(np.int32).astype(np.int64)
    return np.round(points.astype(np.float64) / grid).astype(np.int64)


def merge_keypoints(
    pairs: Iterable[PairMatches],
    grid: float = 1.0,
    image_sizes: Mapping[str, tuple[int, int]] | None = None,
) -> MergedMatches:
    """Merge per-pair matches into per-image keypoints (see the module doc).

    Args:
        pairs: the pairs' matches; a pair may appear once (as ``(a, b)`` or ``(b, a)``).
        grid: snapping grid in px (>= 0; 0: only identical coordinates merge).
        image_sizes: optional ``(width, height)`` per image name, kept for the writers.

    Returns:
        :class:`MergedMatches`; keypoints of an image sorted by grid cell (row-major by y, x).
    """
    if not (isinstance(grid, int | float) and not isinstance(grid, bool) and grid >= 0):
        raise ConfigError(f"grid={grid!r}; it must be a number of px >= 0 (0: exact merging)")
    cells: dict[str, list[np.ndarray]] = {}
    slices: list[tuple[str, str, int, int, int, int, np.ndarray]] = []
    seen: set[frozenset[str] | tuple[str, str]] = set()
    used: dict[str, int] = {}
    for pair in pairs:
        k0 = np.asarray(pair.keypoints0, np.float32).reshape(-1, 2)
        k1 = np.asarray(pair.keypoints1, np.float32).reshape(-1, 2)
        score = np.asarray(pair.scores, np.float32).reshape(-1)
        if not len(k0) == len(k1) == len(score):
            raise InputError(
                f"pair {pair.name0} {pair.name1}: {len(k0)} keypoints0, {len(k1)} keypoints1 "
                f"and {len(score)} scores; they must be equal"
            )
        if not (np.isfinite(k0).all() and np.isfinite(k1).all()):
            raise InputError(f"pair {pair.name0} {pair.name1}: keypoints are not all finite")
        key = frozenset((pair.name0, pair.name1)) if pair.name0 != pair.name1 else None
        if key is None:
            raise InputError(f"pair {pair.name0} {pair.name1} matches an image with itself")
        if key in seen:
            raise InputError(
                f"pair {pair.name0} {pair.name1} is given twice (also as the reverse pair); "
                "give each pair once"
            )
        seen.add(key)
        spans: list[int] = []
        for name, pts in ((pair.name0, k0), (pair.name1, k1)):
            start = used.get(name, 0)
            cells.setdefault(name, []).append(_snap(pts, grid))
            used[name] = start + len(pts)
            spans.extend((start, start + len(pts)))
        slices.append((pair.name0, pair.name1, spans[0], spans[1], spans[2], spans[3], score))
    keypoints: dict[str, np.ndarray] = {}
    inverse: dict[str, np.ndarray] = {}
    for name, parts in cells.items():
        stacked = np.concatenate(parts) if parts else np.zeros((0, 2), np.int64)
        # sort by (y, x): lexsort's last key is the primary one
        unique, inv = np.unique(stacked[:, ::-1], axis=0, return_inverse=True)
        unique = unique[:, ::-1]
        if grid == 0:
            points = np.ascontiguousarray(unique.astype(np.int32)).view(np.float32)
        else:
            points = (unique.astype(np.float64) * grid).astype(np.float32)
        keypoints[name] = np.ascontiguousarray(points.reshape(-1, 2))
        inverse[name] = inv.reshape(-1)
    matches: dict[tuple[str, str], np.ndarray] = {}
    scores: dict[tuple[str, str], np.ndarray] = {}
    for name0, name1, a0, b0, a1, b1, score in slices:
        ids = np.stack([inverse[name0][a0:b0], inverse[name1][a1:b1]], axis=1).astype(np.int32)
        ids, best = _unique_best(ids, score)
        matches[(name0, name1)] = ids
        scores[(name0, name1)] = best
    sizes = dict(image_sizes or {})
    return MergedMatches(keypoints, matches, scores, sizes, float(grid))


def _unique_best(ids: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique rows of ``ids`` ``(M, 2)`` in first-seen order, each with its best score."""
    if len(ids) == 0:
        return ids.reshape(0, 2), score.reshape(0)
    _, first, inv = np.unique(ids, axis=0, return_index=True, return_inverse=True)
    inv = inv.reshape(-1)
    best = np.full(len(first), -np.inf, np.float32)
    np.maximum.at(best, inv, score)
    order = np.argsort(first, kind="stable")
    return ids[first[order]], best[order]


def to_matches0(matches: np.ndarray, scores: np.ndarray, n0: int) -> tuple[np.ndarray, np.ndarray]:
    """hloc's ``matches0`` ``(n0,)`` int32 (-1: unmatched) and ``matching_scores0`` float16.

    ``matches0`` holds one partner per image-0 keypoint: where merged matches give an image-0
    keypoint several partners, the best-scoring one is kept (ties: the first).
    """
    matches0 = np.full(n0, -1, np.int32)
    scores0 = np.zeros(n0, np.float32)
    order = np.lexsort((np.arange(len(scores)), -scores))  # best first, stable
    taken = np.zeros(n0, bool)
    for k in order:
        i = int(matches[k, 0])
        if not taken[i]:
            taken[i] = True
            matches0[i] = int(matches[k, 1])
            scores0[i] = scores[k]
    return matches0, scores0.astype(np.float16)


def hloc_pair_name(name0: str, name1: str) -> str:
    """hloc's ``names_to_pair``: ``name0/name1`` with any ``/`` inside a name replaced by ``-``."""
    return "/".join((name0.replace("/", "-"), name1.replace("/", "-")))


def write_hloc(merged: MergedMatches, features_path: Path, matches_path: Path) -> None:
    """Write ``merged`` as hloc's features and matches files (see the module doc).

    Existing files are replaced; each file is written to a temporary name and then moved into
    place, so an interrupted write leaves no half file under the final name.
    """
    h5py = require("h5py", "hloc")
    for path in (features_path, matches_path):
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = features_path.with_name(f".{features_path.name}.partial")
    with h5py.File(tmp, "w") as f:
        for name, points in merged.keypoints.items():
            grp = f.create_group(name)
            grp.create_dataset("keypoints", data=points.astype(np.float32))
            if name in merged.image_sizes:
                grp.create_dataset("image_size", data=np.array(merged.image_sizes[name], np.int64))
    tmp.replace(features_path)
    tmp = matches_path.with_name(f".{matches_path.name}.partial")
    with h5py.File(tmp, "w") as f:
        for (name0, name1), ids in merged.matches.items():
            matches0, scores0 = to_matches0(
                ids, merged.scores[(name0, name1)], len(merged.keypoints[name0])
            )
            grp = f.create_group(hloc_pair_name(name0, name1))
            grp.create_dataset("matches0", data=matches0)
            grp.create_dataset("matching_scores0", data=scores0)
    tmp.replace(matches_path)
