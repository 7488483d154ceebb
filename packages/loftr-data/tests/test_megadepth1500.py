"""MegaDepth-1500 builder on the shipped index files and on a root assembled from the sample."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from loftr_data import (
    DataConfigError,
    MegaDepthDataset,
    MissingDatasetFileError,
    megadepth1500,
    validate_sample,
)
from loftr_data.scene_info import load_scene_info

ORDER = ["0022_0.1_0.3", "0015_0.1_0.3", "0015_0.3_0.5", "0022_0.3_0.5", "0022_0.5_0.7"]


def test_shipped_index_without_images_names_missing_file(shared_data: Path, tmp_path: Path) -> None:
    index = shared_data / "megadepth1500_index"
    with pytest.raises(MissingDatasetFileError) as err:
        megadepth1500(tmp_path, index)
    msg = str(err.value)
    assert "does not exist" not in msg  # tmp_path exists: the files inside are what is missing
    # The first scene of the list is checked first; the message names a file and the index file.
    assert "0022_0.1_0.3.npz" in msg and str(tmp_path / "Undistorted_SfM" / "0022") in msg


def test_shipped_index_structure(shared_data: Path, tmp_path: Path) -> None:
    index = shared_data / "megadepth1500_index"
    test_set = megadepth1500(tmp_path, index, check_files=False)
    assert len(test_set) == 1500
    scenes = test_set.datasets
    assert [d.scene_id for d in scenes] == ORDER  # type: ignore[attr-defined]
    assert all(len(d) == 300 for d in scenes)  # type: ignore[arg-type]
    assert all(d.img_resize == 840 and not d.load_depth for d in scenes)  # type: ignore[attr-defined]
    with pytest.raises(DataConfigError, match="list file"):
        megadepth1500(tmp_path, tmp_path)
    with pytest.raises(MissingDatasetFileError, match=r"dataset root .*nowhere does not exist"):
        megadepth1500(tmp_path / "nowhere", index)


def _write_index(path: Path, info_path: Path, prefix: str) -> None:
    """A pickled-dict scene-info file (the MegaDepth-1500 variant) for the sample's pair 0."""
    info = load_scene_info(info_path)
    n = len(info.image_paths)
    image_paths = np.array([None] * n, dtype=object)
    depth_paths = np.array([None] * n, dtype=object)
    for idx in (1474, 1462):
        stem = Path(str(info.image_paths[idx])).stem
        image_paths[idx] = f"Undistorted_SfM/{prefix}/images/{stem}.jpg"
        depth_paths[idx] = f"phoenix/S6/zl548/MegaDepth_v1/{prefix}/dense0/depths/{stem}.h5"
    data = {
        "image_paths": image_paths,
        "depth_paths": depth_paths,
        "intrinsics": np.array(info.intrinsics, dtype=object),
        "poses": np.array(info.poses, dtype=object),
        "pair_infos": [((1474, 1462), 0.64, np.zeros(4)), ((1462, 1474), 0.05, np.zeros(4))],
    }
    with open(path, "wb") as fh:
        pickle.dump(data, fh)


def test_reads_from_assembled_root(shared_data: Path, tmp_path: Path) -> None:
    sample = shared_data / "megadepth_sample"
    root, index = tmp_path / "root", tmp_path / "index"
    index.mkdir()
    for stem in ("5122787062_7ef463a806_o", "8583256543_96562c14f2_o"):
        img_dir = root / "Undistorted_SfM" / "0015" / "images"
        dep_dir = root / "phoenix" / "S6" / "zl548" / "MegaDepth_v1" / "0015" / "dense0" / "depths"
        img_dir.mkdir(parents=True, exist_ok=True)
        dep_dir.mkdir(parents=True, exist_ok=True)
        (img_dir / f"{stem}.jpg").symlink_to(sample / f"{stem}.jpg")
        (dep_dir / f"{stem}.h5").symlink_to(sample / f"{stem}.h5")
    _write_index(index / "0015_0.1_0.3.npz", sample / "sample.npz", "0015")
    (index / "megadepth_test_1500.txt").write_text("0015_0.1_0.3\n\n")
    test_set = megadepth1500(root, index)
    assert len(test_set) == 2
    s = test_set[0]
    validate_sample(s)
    assert s["image0"].shape == (1, 840, 840) and s["mask0"].shape == (105, 105)
    assert "depth0" not in s and s["scene_id"] == "0015_0.1_0.3"
    assert s["pair_names"][0] == "Undistorted_SfM/0015/images/5122787062_7ef463a806_o.jpg"
    # Same pixels and geometry as reading the NpzFile variant directly.
    direct = MegaDepthDataset(
        sample, sample / "sample.npz", pair_ids=[0], img_resize=840, load_depth=False
    )[0]
    for key in ("image0", "image1", "mask0", "mask1", "K0", "K1", "T_0to1", "scale0"):
        torch.testing.assert_close(s[key], direct[key], rtol=0, atol=0)
    # Pair 1 swaps the images: its T_0to1 is the inverse of pair 0's.
    swapped = test_set[1]
    torch.testing.assert_close(swapped["T_0to1"], s["T_1to0"])
    # With depth: the same files, validation mode.
    with_depth = megadepth1500(root, index, load_depth=True, min_overlap_score=0.1)
    assert len(with_depth) == 1 and with_depth[0]["depth0"].shape == (2000, 2000)
