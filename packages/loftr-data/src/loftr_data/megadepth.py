"""The MegaDepth pair dataset (one scene-info file) and builders for lists of scenes.

Every sample follows the contract of :mod:`loftr_data.sample` (depth variant, with padding masks).
Preprocessing follows the original exactly (see :mod:`loftr_data.preprocess`); deliberate
differences from the original, all documented in the package README:

* ``K0``/``K1`` are scaled to the returned image (the original returns the original-size K and
  multiplies grid points by ``scale`` in its supervision instead; the result is the same warp);
* ``scene_id`` is the scene-info file stem (the original cuts the path at its first ``.``);
* ``pair_id`` is the pair's index in the file's unfiltered ``pair_infos`` (stable across filters);
* without depth (``load_depth=False``, the original's test mode) the depth keys are absent rather
  than empty tensors;
* missing files are reported when the dataset is built, not when a sample is first read.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from loftr_data.errors import DataConfigError, MissingDatasetFileError
from loftr_data.preprocess import (
    DEPTH_PAD_SIZE,
    coarse_mask,
    pad_bottom_right,
    read_depth,
    read_gray,
    resize_long_side,
)
from loftr_data.scene_info import SceneInfo, load_scene_info

__all__ = ["MegaDepthDataset", "megadepth_scenes"]

logger = logging.getLogger(__name__)

_MAX_LISTED_MISSING = 5


class MegaDepthDataset(Dataset[dict[str, Any]]):
    """Pairs of one MegaDepth scene-info file, preprocessed as the original LoFTR.

    Args:
        root: dataset root; the scene-info paths are relative to it.
        scene_info: path of the scene-info ``.npz`` file (either on-disk variant).
        img_resize: long side ``R`` of the returned images (640 or 840 in the original configs);
            a positive multiple of 8. Images are padded to ``R x R``.
        min_overlap_score: keep pairs with overlap score strictly greater than this (the original
            filter; its test mode uses 0.0).
        max_overlap_score: keep pairs with overlap score at most this; None = no upper bound.
        pair_ids: optional subset of pair indices (into the file's unfiltered ``pair_infos``);
            the overlap filter applies on top. Duplicates are removed, order is kept sorted.
        load_depth: read ``depth0``/``depth1`` (training/validation). False gives the original's
            test mode: no depth keys and no depth files needed.
        check_files: check at construction that every image (and depth) file of the kept pairs
            exists; a missing file raises :class:`MissingDatasetFileError` naming it and the
            scene-info file. Set False to skip the check (faster start on huge indices).
        dataset_name: value of the ``dataset_name`` key.

    Raises:
        DataConfigError: on invalid settings or a pair that references an unused (None) image.
        SceneInfoError: if the scene-info file cannot be read.
        MissingDatasetFileError: if ``check_files`` and files are missing.
    """

    def __init__(
        self,
        root: str | Path,
        scene_info: str | Path,
        *,
        img_resize: int = 640,
        min_overlap_score: float = 0.0,
        max_overlap_score: float | None = None,
        pair_ids: Sequence[int] | None = None,
        load_depth: bool = True,
        check_files: bool = True,
        dataset_name: str = "MegaDepth",
    ) -> None:
        if isinstance(img_resize, bool) or not isinstance(img_resize, int) or img_resize <= 0:
            raise DataConfigError(f"img_resize must be a positive int, got {img_resize!r}")
        if img_resize % 8:
            raise DataConfigError(
                f"img_resize must be a multiple of 8 (LoFTR's coarse stride), got {img_resize}; "
                "use e.g. 640 or 840"
            )
        if max_overlap_score is not None and max_overlap_score <= min_overlap_score:
            raise DataConfigError(
                f"max_overlap_score ({max_overlap_score}) must exceed min_overlap_score "
                f"({min_overlap_score}); the kept range is (min, max]"
            )
        self.root = Path(root)
        self.img_resize = img_resize
        self.load_depth = load_depth
        self.dataset_name = dataset_name
        self.scene_info: SceneInfo = load_scene_info(scene_info)
        self.scene_id = self.scene_info.name
        self.pair_ids = self._select_pairs(pair_ids, min_overlap_score, max_overlap_score)
        self._check_pairs_reference_images()
        if check_files:
            self.check_files()

    def _select_pairs(
        self, pair_ids: Sequence[int] | None, lo: float, hi: float | None
    ) -> list[int]:
        info = self.scene_info
        if pair_ids is None:
            candidates = np.arange(info.num_pairs)
        else:
            candidates = np.unique(np.asarray(list(pair_ids), dtype=np.int64))
            bad = candidates[(candidates < 0) | (candidates >= info.num_pairs)]
            if bad.size:
                raise DataConfigError(
                    f"pair_ids {bad.tolist()[:10]} are out of range for {info.path}, which lists "
                    f"{info.num_pairs} pairs (valid ids: 0..{info.num_pairs - 1})"
                )
        scores = info.overlap_scores[candidates]
        keep = scores > lo
        if hi is not None:
            keep &= scores <= hi
        return [int(i) for i in candidates[keep]]

    def _check_pairs_reference_images(self) -> None:
        info = self.scene_info
        for pid in self.pair_ids:
            for idx in info.pair_indices[pid]:
                fields = [info.image_paths[idx], info.intrinsics[idx], info.poses[idx]]
                if self.load_depth:
                    fields.append(info.depth_paths[idx])
                if any(f is None for f in fields):
                    raise DataConfigError(
                        f"pair {pid} of {info.path} uses image {idx}, whose path, depth path, "
                        "intrinsics or pose is None in the scene-info file; the index is "
                        "inconsistent (exclude the pair with pair_ids)"
                    )

    def check_files(self) -> None:
        """Check that every image (and depth) file of the kept pairs exists under the root.

        Raises:
            MissingDatasetFileError: listing the first missing files, their count and the
                scene-info file that names them.
        """
        info = self.scene_info
        used = sorted({int(i) for pid in self.pair_ids for i in info.pair_indices[pid]})
        missing: list[Path] = []
        for idx in used:
            rels = [info.image_paths[idx]]
            if self.load_depth:
                rels.append(info.depth_paths[idx])
            for rel in rels:
                if rel is not None and not (self.root / rel).is_file():
                    missing.append(self.root / rel)
        if missing:
            if not self.root.is_dir():
                raise MissingDatasetFileError(
                    f"dataset root {self.root} does not exist (scene-info file {info.path} names "
                    f"{len(missing)} file(s) under it, e.g. {missing[0]}); pass the directory the "
                    "index paths are relative to"
                )
            listed = "\n  ".join(str(p) for p in missing[:_MAX_LISTED_MISSING])
            more = len(missing) - _MAX_LISTED_MISSING
            tail = f"\n  ... and {more} more" if more > 0 else ""
            raise MissingDatasetFileError(
                f"{len(missing)} file(s) named by scene-info file {info.path} are missing under "
                f"the dataset root {self.root}:\n  {listed}{tail}\nFix the root (paths in the index "
                "are relative to it), restrict the pairs (pair_ids / overlap range), or pass "
                "check_files=False to defer the error to reading time."
            )

    def __len__(self) -> int:
        return len(self.pair_ids)

    def _read_image(self, idx: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        rel = self.scene_info.image_paths[idx]
        if rel is None:  # excluded in __init__; kept for the type checker
            raise DataConfigError(f"image {idx} of {self.scene_info.path} has no path")
        image = read_gray(self.root / rel)
        resized, scale = resize_long_side(image, self.img_resize)
        padded, mask = pad_bottom_right(resized, max(resized.shape))
        tensor = torch.from_numpy(padded).float().div_(255.0).unsqueeze(0)
        return tensor, coarse_mask(mask), scale

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Read pair ``index`` (position among the kept pairs); see :mod:`loftr_data.sample`."""
        if not 0 <= index < len(self.pair_ids):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} pairs")
        info = self.scene_info
        pid = self.pair_ids[index]
        i, j = (int(v) for v in info.pair_indices[pid])
        image0, mask0, scale0 = self._read_image(i)
        image1, mask1, scale1 = self._read_image(j)
        k0, k1, pose0, pose1 = info.intrinsics[i], info.intrinsics[j], info.poses[i], info.poses[j]
        if k0 is None or k1 is None or pose0 is None or pose1 is None:  # excluded in __init__
            raise DataConfigError(f"pair {pid} of {info.path} lacks intrinsics or poses")
        t_0to1 = pose1 @ np.linalg.inv(pose0)
        sample: dict[str, Any] = {
            "image0": image0,
            "image1": image1,
            "mask0": mask0,
            "mask1": mask1,
            "scale0": torch.from_numpy(scale0),
            "scale1": torch.from_numpy(scale1),
            "K0": _scaled_intrinsics(k0, scale0),
            "K1": _scaled_intrinsics(k1, scale1),
            "T_0to1": torch.from_numpy(t_0to1.astype(np.float32)),
            "T_1to0": torch.from_numpy(np.linalg.inv(t_0to1).astype(np.float32)),
            "dataset_name": self.dataset_name,
            "scene_id": self.scene_id,
            "pair_id": pid,
            "pair_names": (str(info.image_paths[i]), str(info.image_paths[j])),
        }
        if self.load_depth:
            d0, d1 = info.depth_paths[i], info.depth_paths[j]
            if d0 is None or d1 is None:  # excluded in __init__
                raise DataConfigError(f"pair {pid} of {info.path} lacks depth paths")
            sample["depth0"] = read_depth(self.root / d0, DEPTH_PAD_SIZE)
            sample["depth1"] = read_depth(self.root / d1, DEPTH_PAD_SIZE)
        return sample

    def __repr__(self) -> str:
        return (
            f"MegaDepthDataset(scene={self.scene_id!r}, pairs={len(self)}, "
            f"img_resize={self.img_resize}, load_depth={self.load_depth}, root={str(self.root)!r})"
        )


def _scaled_intrinsics(k: np.ndarray, scale: np.ndarray) -> torch.Tensor:
    """``diag(1/sx, 1/sy, 1) @ K``: intrinsics of the resized image (float32 (3, 3))."""
    scaled = np.diag([1.0 / float(scale[0]), 1.0 / float(scale[1]), 1.0]) @ k
    return torch.from_numpy(scaled.astype(np.float32))


def megadepth_scenes(
    root: str | Path,
    index_dir: str | Path,
    scene_list: str | Path | Sequence[str],
    **kwargs: Any,
) -> list[MegaDepthDataset]:
    """Build one :class:`MegaDepthDataset` per scene-info file named in a list.

    Args:
        root: dataset root (images and depths, paths as in the index files).
        index_dir: directory of the scene-info files.
        scene_list: a list file (one scene-info name per line, ``.npz`` optional, blank lines
            ignored) or the names themselves.
        **kwargs: forwarded to :class:`MegaDepthDataset` (``img_resize``, ``load_depth``...).

    Returns:
        The per-scene datasets in list order (wrap them in ``ConcatDataset`` and sample them with
        :class:`loftr_data.SceneBalancedSampler`).
    """
    index_dir = Path(index_dir)
    if isinstance(scene_list, (str, Path)):
        list_path = Path(scene_list)
        if not list_path.is_file():
            raise DataConfigError(f"scene list file {list_path} does not exist")
        names = [ln.strip() for ln in list_path.read_text().splitlines() if ln.strip()]
    else:
        names = [str(n) for n in scene_list]
    if not names:
        raise DataConfigError("the scene list is empty; name at least one scene-info file")
    files = [index_dir / (n if n.endswith(".npz") else f"{n}.npz") for n in names]
    datasets = [MegaDepthDataset(root, f, **kwargs) for f in files]
    logger.debug("built %d MegaDepth scenes, %d pairs", len(datasets), sum(map(len, datasets)))
    return datasets
