"""MegaDepth scene-info (index) files, read without executing arbitrary pickled code.

A scene-info file holds, per image of a scene, ``image_paths``/``depth_paths`` (object arrays of
paths relative to the dataset root, ``None`` for unused images), ``intrinsics`` (3x3 K of the
original image) and ``poses`` (4x4 world-to-camera), plus ``pair_infos``: per pair
``((i, j), overlap_score, central_matches)``. Two on-disk variants exist and both are read:

* a real ``.npz`` archive of object arrays (e.g. ``megadepth_sample/sample.npz``), whose
  ``pair_infos`` is a ``(P, 3)`` object array;
* a pickled ``dict`` saved under an ``.npz`` name (the MegaDepth-1500 and training indices), whose
  ``pair_infos`` is a list of tuples.

Both are pickles inside, so ``np.load(..., allow_pickle=True)`` would run any code a malicious file
carries. :func:`load_scene_info` instead unpickles with an allow-list of the few numpy names that
array pickles need and rejects everything else.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from loftr_data.errors import SceneInfoError

__all__ = ["SceneInfo", "load_scene_info"]

REQUIRED_FIELDS = ("image_paths", "depth_paths", "intrinsics", "poses", "pair_infos")

_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays/scalars; refuses any other global."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: a scene-info file may only hold numpy "
                "arrays, numbers, strings, lists, tuples and dicts"
            )
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            module = "numpy._core." + module.split(".", 2)[2]  # avoid numpy 2's deprecation shim
        return super().find_class(module, name)


def _read_npy(fh: IO[bytes]) -> Any:
    major, _ = np.lib.format.read_magic(fh)
    if major == 1:
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    if dtype.hasobject:
        return _ArrayOnlyUnpickler(fh).load()
    data = np.frombuffer(fh.read(), dtype=dtype)
    return data.reshape(shape, order="F" if fortran else "C")


def _load_raw(path: Path) -> Mapping[str, Any]:
    with open(path, "rb") as fh:
        head = fh.read(6)
        fh.seek(0)
        if head.startswith(b"PK"):
            with zipfile.ZipFile(fh) as zf:
                out: dict[str, Any] = {}
                for member in zf.namelist():
                    if member.endswith(".npy"):
                        with zf.open(member) as mf:
                            out[member[: -len(".npy")]] = _read_npy(io.BytesIO(mf.read()))
                return out
        obj = _read_npy(fh) if head == b"\x93NUMPY" else _ArrayOnlyUnpickler(fh).load()
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        obj = obj.item()
    if not isinstance(obj, Mapping):
        raise SceneInfoError(
            f"scene-info file {path} holds a {type(obj).__name__}, expected a dict of the fields "
            f"{list(REQUIRED_FIELDS)}"
        )
    return obj


def _path_list(values: Sequence[Any]) -> list[str | None]:
    return [None if v is None else str(v) for v in values]


@dataclass(frozen=True)
class SceneInfo:
    """One scene-info file, normalised.

    Attributes:
        path: the file it was read from.
        image_paths: per image, the path relative to the dataset root, or None (unused image).
        depth_paths: per image, the depth ``.h5`` path relative to the root, or None.
        intrinsics: per image, ``(3, 3)`` float64 K of the original image, or None.
        poses: per image, ``(4, 4)`` float64 world-to-camera pose, or None.
        pair_indices: ``(P, 2)`` int64 image indices of each pair.
        overlap_scores: ``(P,)`` float64 overlap score of each pair.
    """

    path: Path
    image_paths: list[str | None]
    depth_paths: list[str | None]
    intrinsics: list[np.ndarray | None]
    poses: list[np.ndarray | None]
    pair_indices: np.ndarray
    overlap_scores: np.ndarray

    @property
    def name(self) -> str:
        """The file's stem, e.g. ``"0015_0.1_0.3"`` (used as ``scene_id``)."""
        name = self.path.name
        return name[: -len(".npz")] if name.endswith(".npz") else self.path.stem

    @property
    def num_pairs(self) -> int:
        """Number of pairs listed in the file (before any filtering)."""
        return int(self.pair_indices.shape[0])


def load_scene_info(path: str | Path) -> SceneInfo:
    """Read a MegaDepth scene-info file of either variant.

    Args:
        path: the ``.npz`` file.

    Returns:
        The normalised :class:`SceneInfo`.

    Raises:
        SceneInfoError: if the file is missing, not a scene-info file, holds anything but plain
            data, or lacks a field.
    """
    path = Path(path)
    if not path.is_file():
        raise SceneInfoError(f"scene-info file {path} does not exist; check the index directory")
    try:
        raw = _load_raw(path)
    except SceneInfoError:
        raise
    except (pickle.UnpicklingError, ValueError, EOFError, zipfile.BadZipFile, OSError) as exc:
        raise SceneInfoError(f"cannot read scene-info file {path}: {exc}") from exc
    missing = [f for f in REQUIRED_FIELDS if f not in raw]
    if missing:
        raise SceneInfoError(
            f"scene-info file {path} lacks the fields {missing} (has {sorted(raw)}); a MegaDepth "
            f"scene-info file needs {list(REQUIRED_FIELDS)}"
        )
    pairs = list(raw["pair_infos"])
    try:
        pair_indices = np.array([np.asarray(p[0]).reshape(2) for p in pairs], dtype=np.int64)
        scores = np.array([float(p[1]) for p in pairs], dtype=np.float64)
    except (TypeError, ValueError, IndexError) as exc:
        raise SceneInfoError(
            f"scene-info file {path}: pair_infos entries must be ((i, j), overlap_score, ...): {exc}"
        ) from exc
    n_images = len(raw["image_paths"])
    pair_indices = pair_indices.reshape(-1, 2)
    if pair_indices.size and (pair_indices.min() < 0 or pair_indices.max() >= n_images):
        raise SceneInfoError(
            f"scene-info file {path}: pair image indices must lie in [0, {n_images}), got range "
            f"[{pair_indices.min()}, {pair_indices.max()}]"
        )

    def matrices(values: Sequence[Any], shape: tuple[int, int]) -> list[np.ndarray | None]:
        return [
            None if v is None else np.asarray(v, dtype=np.float64).reshape(shape) for v in values
        ]

    return SceneInfo(
        path=path,
        image_paths=_path_list(raw["image_paths"]),
        depth_paths=_path_list(raw["depth_paths"]),
        intrinsics=matrices(raw["intrinsics"], (3, 3)),
        poses=matrices(raw["poses"], (4, 4)),
        pair_indices=pair_indices,
        overlap_scores=scores,
    )
