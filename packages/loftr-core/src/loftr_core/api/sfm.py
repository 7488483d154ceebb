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

:func:`write_colmap` creates a COLMAP database with pycolmap (``pip install
'loftr-core[colmap]'``): cameras and images from the image files (``pycolmap.import_images``: the
EXIF focal length where the file has one, else COLMAP's guess of 1.2 x the longer side), replaced
by a given ``K`` per image where known (``PINHOLE``, focal kept fixed as a prior), keypoints
shifted by +0.5 px to COLMAP's pixel origin (as hloc does), and the merged matches;
:func:`verify_colmap` runs COLMAP's geometric verification and :func:`reconstruct_colmap` its
incremental mapper.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from loftr_core.api.optional import require
from loftr_core.errors import ConfigError, InputError

__all__ = [
    "ColmapDatabase",
    "MergedMatches",
    "PairMatches",
    "hloc_pair_name",
    "merge_keypoints",
    "reconstruct_colmap",
    "to_matches0",
    "verify_colmap",
    "write_colmap",
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


@dataclass(frozen=True)
class ColmapDatabase:
    """What :func:`write_colmap` wrote: the database, its pair list and where cameras came from.

    Attributes:
        database: the ``.db`` file; pairs: a pair list file (``name0 name1`` per line).
        image_ids: image name -> COLMAP image id.
        given_k: images whose camera is the given ``K``; exif: images with an EXIF focal
            length; guessed: the others (COLMAP's 1.2 x longer side guess).
    """

    database: Path
    pairs: Path
    image_ids: dict[str, int]
    given_k: tuple[str, ...]
    exif: tuple[str, ...]
    guessed: tuple[str, ...]


@contextlib.contextmanager
def _quiet_colmap(pycolmap: Any) -> Iterator[None]:
    """COLMAP logs every step to stderr; keep its warnings and errors only."""
    logging = getattr(pycolmap, "logging", None)
    old = getattr(logging, "minloglevel", None)
    if logging is not None and old is not None:
        logging.minloglevel = max(int(old), 1)
    try:
        yield
    finally:
        if logging is not None and old is not None:
            logging.minloglevel = old


def write_colmap(
    merged: MergedMatches,
    database: Path,
    image_dir: Path,
    intrinsics: Mapping[str, np.ndarray] | None = None,
) -> ColmapDatabase:
    """Create ``database`` (replacing it) from ``merged`` and the images under ``image_dir``.

    Args:
        merged: from :func:`merge_keypoints`; image names are paths relative to ``image_dir``.
        database: the ``.db`` file to write (its folder also gets ``pairs.txt``).
        image_dir: the folder the image names are relative to (the files are read for their
            size and EXIF).
        intrinsics: optional ``(3, 3)`` K per image name; those cameras become ``PINHOLE``
            with these parameters.
    """
    pycolmap = require("pycolmap", "colmap")
    names = sorted(merged.keypoints)
    for name in names:
        if Path(name).is_absolute() or not (image_dir / name).is_file():
            raise InputError(
                f"image {name!r} is not a file under {str(image_dir)!r}; COLMAP needs image "
                "names relative to the image folder (give relative paths and --image-root)"
            )
    database.parent.mkdir(parents=True, exist_ok=True)
    for path in (database, database.with_name(database.name + "-wal")):
        path.unlink(missing_ok=True)
    given = dict(intrinsics or {})
    with _quiet_colmap(pycolmap):
        pycolmap.Database.open(database).close()
        pycolmap.import_images(database, image_dir, pycolmap.CameraMode.PER_IMAGE, names)
        with pycolmap.Database.open(database) as db:
            ids = {image.name: int(image.image_id) for image in db.read_all_images()}
            given_k, exif, guessed = [], [], []
            for name in names:
                camera = db.read_camera(db.read_image(ids[name]).camera_id)
                if name in given:
                    K = np.asarray(given[name], np.float64)
                    camera.model = pycolmap.CameraModelId.PINHOLE
                    camera.params = [K[0, 0], K[1, 1], K[0, 2], K[1, 2]]
                    camera.has_prior_focal_length = True
                    db.update_camera(camera)
                    given_k.append(name)
                elif camera.has_prior_focal_length:
                    exif.append(name)
                else:
                    guessed.append(name)
                points = merged.keypoints[name].astype(np.float64) + 0.5  # COLMAP's origin
                db.write_keypoints(ids[name], points.astype(np.float32))
            for (name0, name1), pair in merged.matches.items():
                db.write_matches(ids[name0], ids[name1], pair.astype(np.uint32))
    pairs = database.with_name("pairs.txt")
    pairs.write_text("".join(f"{a} {b}\n" for a, b in merged.matches))
    return ColmapDatabase(database, pairs, ids, tuple(given_k), tuple(exif), tuple(guessed))


def verify_colmap(written: ColmapDatabase) -> int:
    """COLMAP's geometric verification of every written pair; the number of verified pairs."""
    pycolmap = require("pycolmap", "colmap")
    with _quiet_colmap(pycolmap):
        pycolmap.verify_matches(written.database, written.pairs)
        with pycolmap.Database.open(written.database) as db:
            return int(db.num_verified_image_pairs())


def reconstruct_colmap(written: ColmapDatabase, image_dir: Path, output: Path) -> Any:
    """COLMAP's incremental mapper on a verified database; the largest reconstruction (a
    ``pycolmap.Reconstruction``; every model is written under ``output/<k>``), or None."""
    pycolmap = require("pycolmap", "colmap")
    output.mkdir(parents=True, exist_ok=True)
    with _quiet_colmap(pycolmap):
        models = pycolmap.incremental_mapping(written.database, image_dir, output)
    if not models:
        return None
    return max(models.values(), key=lambda rec: rec.num_reg_images())
