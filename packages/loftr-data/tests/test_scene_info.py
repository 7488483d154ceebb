"""Both scene-info variants, and refusal of pickles that hold code."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from loftr_data.errors import SceneInfoError
from loftr_data.scene_info import load_scene_info


def test_npzfile_variant_matches_numpy(shared_data: Path) -> None:
    path = shared_data / "megadepth_sample" / "sample.npz"
    info = load_scene_info(path)
    ref = np.load(path, allow_pickle=True)
    assert info.name == "sample" and info.num_pairs == 601
    np.testing.assert_array_equal(info.pair_indices[0], [1474, 1462])
    assert info.overlap_scores[0] == pytest.approx(0.6428571428571429)
    assert info.image_paths[1474] == "5122787062_7ef463a806_o.jpg"
    assert info.depth_paths[1462] == "8583256543_96562c14f2_o.h5"
    np.testing.assert_array_equal(info.poses[1474], ref["poses"][1474])
    np.testing.assert_array_equal(info.intrinsics[1462], ref["intrinsics"][1462])
    assert sum(p is None for p in info.image_paths) == 1763 - 336


def test_pickled_dict_variant_matches_numpy(shared_data: Path) -> None:
    path = shared_data / "megadepth1500_index" / "0015_0.1_0.3.npz"
    info = load_scene_info(path)
    ref = np.load(path, allow_pickle=True)
    assert isinstance(ref, dict)
    assert info.name == "0015_0.1_0.3" and info.num_pairs == 300
    for k, ((i, j), score, _) in enumerate(ref["pair_infos"]):
        assert tuple(info.pair_indices[k]) == (i, j) and info.overlap_scores[k] == score
    assert (
        info.image_paths[580] == "Undistorted_SfM/0015/images/" + Path(ref["image_paths"][580]).name
    )
    np.testing.assert_array_equal(info.poses[580], ref["poses"][580])
    assert info.overlap_scores.min() >= 0.1 and info.overlap_scores.max() < 0.3


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned",))


def test_code_in_pickle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.npz"
    with open(path, "wb") as fh:
        pickle.dump({"image_paths": _Evil()}, fh)
    with pytest.raises(SceneInfoError, match="refusing to load global"):
        load_scene_info(path)


def test_missing_field_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "partial.npz"
    with open(path, "wb") as fh:
        pickle.dump({"image_paths": np.array([None], dtype=object)}, fh)
    with pytest.raises(SceneInfoError, match=r"lacks the fields \['depth_paths'"):
        load_scene_info(path)
    with pytest.raises(SceneInfoError, match="does not exist"):
        load_scene_info(tmp_path / "nope.npz")
