"""The MegaDepth-1500 test set: 5 scene-info files x 300 pairs, images resized to 840 px."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import ConcatDataset

from loftr_data.errors import DataConfigError
from loftr_data.megadepth import MegaDepthDataset, megadepth_scenes

__all__ = ["MEGADEPTH1500_LIST", "MEGADEPTH1500_RESIZE", "megadepth1500"]

MEGADEPTH1500_LIST = "megadepth_test_1500.txt"
MEGADEPTH1500_RESIZE = 840


def megadepth1500(
    root: str | Path,
    index_dir: str | Path,
    *,
    list_file: str | Path | None = None,
    img_resize: int = MEGADEPTH1500_RESIZE,
    load_depth: bool = False,
    check_files: bool = True,
    **kwargs: Any,
) -> ConcatDataset[dict[str, Any]]:
    """Build the MegaDepth-1500 test set as the original test config does.

    The five scene-info files are concatenated in list-file order (``0022_0.1_0.3``,
    ``0015_0.1_0.3``, ``0015_0.3_0.5``, ``0022_0.3_0.5``, ``0022_0.5_0.7``), every pair is kept
    (overlap > 0, the original's test mode), images are resized to 840 px and padded to 840 x 840
    (coarse masks 105 x 105), batch size 1 in evaluation.

    Args:
        root: dataset root holding ``Undistorted_SfM/...`` images (and ``phoenix/...`` depths when
            ``load_depth``), as the paths in the index files say.
        index_dir: directory with the five scene-info files and the list file (the original's
            ``assets/megadepth_test_1500_scene_info``).
        list_file: the list file; defaults to ``index_dir / "megadepth_test_1500.txt"``.
        img_resize: long side (840 in the released test config).
        load_depth: also read depth maps (validation with losses); the test set needs none.
        check_files: check at build time that every image (and depth) file exists.
        **kwargs: forwarded to :class:`loftr_data.MegaDepthDataset`.

    Returns:
        A ``ConcatDataset`` of five :class:`loftr_data.MegaDepthDataset` (1500 pairs for the full
        index).

    Raises:
        DataConfigError: if the list file is missing.
        MissingDatasetFileError: if images (or depths) are missing under ``root``; the message
            names the files and the scene-info file.
    """
    index_dir = Path(index_dir)
    list_path = Path(list_file) if list_file is not None else index_dir / MEGADEPTH1500_LIST
    if not list_path.is_file():
        raise DataConfigError(
            f"MegaDepth-1500 list file {list_path} does not exist; pass the directory holding "
            f"{MEGADEPTH1500_LIST} and the five scene-info files as index_dir"
        )
    kwargs.setdefault("min_overlap_score", 0.0)
    scenes: list[MegaDepthDataset] = megadepth_scenes(
        root,
        index_dir,
        list_path,
        img_resize=img_resize,
        load_depth=load_depth,
        check_files=check_files,
        **kwargs,
    )
    return ConcatDataset(scenes)
