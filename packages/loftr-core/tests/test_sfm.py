"""Per-image keypoints from pair matches, and hloc's feature/match files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from loftr_core.api.sfm import (
    PairMatches,
    hloc_pair_name,
    merge_keypoints,
    to_matches0,
    write_hloc,
)
from loftr_core.errors import ConfigError, InputError


def _scene(seed: int = 0) -> tuple[dict[str, np.ndarray], list[PairMatches]]:
    """Three images seeing 40 shared 3-D points (image positions jittered below the grid) and
    pair matches among them, plus a few pair-only points."""
    rng = np.random.default_rng(seed)
    truth = {name: rng.uniform(0, 500, (40, 2)).round() for name in "abc"}
    pairs = []
    for n0, n1 in [("a", "b"), ("b", "c"), ("a", "c")]:
        ids = rng.permutation(40)[:30]
        k0 = truth[n0][ids] + rng.uniform(-0.3, 0.3, (30, 2))
        k1 = truth[n1][ids] + rng.uniform(-0.3, 0.3, (30, 2))
        extra0 = rng.uniform(600, 700, (5, 2))  # seen in this pair only
        extra1 = rng.uniform(600, 700, (5, 2))
        pairs.append(
            PairMatches(
                n0,
                n1,
                np.concatenate([k0, extra0]).astype(np.float32),
                np.concatenate([k1, extra1]).astype(np.float32),
                rng.uniform(0.2, 1.0, 35).astype(np.float32),
            )
        )
    return truth, pairs


def test_shared_points_become_one_keypoint_and_no_match_is_lost() -> None:
    truth, pairs = _scene()
    merged = merge_keypoints(pairs, grid=1.0)
    for pair in pairs:
        ids = merged.matches[(pair.name0, pair.name1)]
        assert ids.dtype == np.int32 and ids.shape == (35, 2)  # every match kept, none doubled
        assert len(np.unique(ids, axis=0)) == 35
        for col, name, pts in ((0, pair.name0, pair.keypoints0), (1, pair.name1, pair.keypoints1)):
            kp = merged.keypoints[name]
            assert (ids[:, col] >= 0).all() and (ids[:, col] < len(kp)).all()
            # each match points at its own keypoint, snapped by at most half a grid cell
            assert np.abs(kp[ids[:, col]] - pts).max() <= 0.5 + 1e-4
        np.testing.assert_array_equal(merged.scores[(pair.name0, pair.name1)], pair.scores)
    for name in "abc":
        used = {tuple(p) for p in truth[name]}
        kp = merged.keypoints[name]
        # the shared points (<= 40 of them) once each, plus 5 pair-only points per pair
        shared = [tuple(p) for p in kp if tuple(p) in used]
        assert len(shared) == len(set(shared)) and len(kp) == len(shared) + 10
        assert len(shared) >= 30


def test_duplicates_within_a_pair_merge_keeping_the_best_score() -> None:
    k0 = np.array([[10.0, 10.0], [10.2, 9.9], [30.0, 30.0], [30.0, 30.0]], np.float32)
    k1 = np.array([[12.0, 11.0], [11.8, 11.1], [40.0, 40.0], [50.0, 50.0]], np.float32)
    pair = PairMatches("x", "y", k0, k1, np.array([0.3, 0.9, 0.5, 0.7], np.float32))
    merged = merge_keypoints([pair], grid=1.0)
    ids = merged.matches[("x", "y")]
    assert ids.shape == (3, 2)  # the first two are one match now
    np.testing.assert_array_equal(merged.scores[("x", "y")], np.float32([0.9, 0.5, 0.7]))
    np.testing.assert_array_equal(merged.keypoints["x"], [[10, 10], [30, 30]])
    # matches0 keeps one partner per image-0 keypoint: the best
    matches0, scores0 = to_matches0(ids, merged.scores[("x", "y")], 2)
    assert matches0.dtype == np.int32 and scores0.dtype == np.float16
    ky = merged.keypoints["y"]
    np.testing.assert_array_equal(ky[matches0], [[12, 11], [50, 50]])
    np.testing.assert_allclose(scores0, [0.9, 0.7], atol=1e-3)
    # grid 0: only identical coordinates merge
    exact = merge_keypoints([pair], grid=0)
    assert len(exact.keypoints["x"]) == 3 and exact.matches[("x", "y")].shape == (4, 2)
    np.testing.assert_array_equal(exact.keypoints["x"][exact.matches[("x", "y")][:, 0]], k0)


def test_bad_input_is_one_line() -> None:
    _, pairs = _scene()
    with pytest.raises(ConfigError, match="grid"):
        merge_keypoints(pairs, grid=-1)
    with pytest.raises(InputError, match="given twice"):
        merge_keypoints([pairs[0], PairMatches("b", "a", *list(vars(pairs[0]).values())[2:])])
    with pytest.raises(InputError, match="must be equal"):
        merge_keypoints([PairMatches("a", "b", np.zeros((3, 2)), np.zeros((2, 2)), np.zeros(3))])
    with pytest.raises(InputError, match="itself"):
        merge_keypoints([PairMatches("a", "a", np.zeros((1, 2)), np.zeros((1, 2)), np.ones(1))])


def test_hloc_files_read_back_with_hlocs_layout(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    _, pairs = _scene(3)
    pairs = [
        PairMatches(f"sub/{p.name0}.jpg", f"sub/{p.name1}.jpg", *list(vars(p).values())[2:])
        for p in pairs
    ]
    sizes = {f"sub/{n}.jpg": (704, 512) for n in "abc"}
    merged = merge_keypoints(pairs, grid=2.0, image_sizes=sizes)
    write_hloc(merged, tmp_path / "features.h5", tmp_path / "matches.h5")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features.h5", "matches.h5"]
    with h5py.File(tmp_path / "features.h5", "r") as f:
        for name, kp in merged.keypoints.items():
            got = f[name]["keypoints"]  # nested groups: "sub" / "a.jpg", as hloc names them
            assert got.dtype == np.float32 and got.shape == kp.shape
            np.testing.assert_array_equal(got[()], kp)
            np.testing.assert_array_equal(f[name]["image_size"][()], [704, 512])
    with h5py.File(tmp_path / "matches.h5", "r") as f:
        for (n0, n1), ids in merged.matches.items():
            assert hloc_pair_name(n0, n1) == f"{n0.replace('/', '-')}/{n1.replace('/', '-')}"
            grp = f[hloc_pair_name(n0, n1)]
            m0, s0 = grp["matches0"][()], grp["matching_scores0"][()]
            assert m0.dtype == np.int32 and s0.dtype == np.float16
            assert m0.shape == (len(merged.keypoints[n0]),)
            want0, wants = to_matches0(ids, merged.scores[(n0, n1)], len(merged.keypoints[n0]))
            np.testing.assert_array_equal(m0, want0)
            np.testing.assert_array_equal(s0, wants)
            # what hloc's get_matches returns: index pairs where matches0 > -1
            idx = np.where(m0 != -1)[0]
            got = {(int(i), int(m0[i])) for i in idx}
            assert got <= {tuple(map(int, r)) for r in ids} and len(got) >= 0.9 * len(ids)


def _rotation(rvec: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.Rodrigues(np.asarray(rvec, np.float64))[0]


def test_synthetic_scene_reconstructs_every_camera_through_merge_and_colmap(
    tmp_path: Path,
) -> None:
    """Six known cameras see 800 points (0.3 px noise); every pair's matches (20% outliers, the
    image-1 side jittered per pair by 0.2 px) go through merge_keypoints (1 px grid), the COLMAP
    database, its verification and its incremental mapper: every camera is registered and every
    relative rotation is within 1 degree of the truth."""
    pycolmap = pytest.importorskip("pycolmap")
    import cv2

    from loftr_core.api.sfm import reconstruct_colmap, verify_colmap, write_colmap

    rng = np.random.default_rng(0)
    w, h, f = 640, 480, 500.0
    K = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]])
    points = rng.uniform([-2, -2, 6], [2, 2, 10], (800, 3))
    rotations, views = [], []
    for k in range(6):
        angle = np.radians(-15 + 6 * k)
        R = _rotation([0.02 * k, angle, 0.01])
        centre = np.array([4.8 * np.sin(angle), 0.1 * k, 0.0])
        x = (points @ R.T - R @ centre) @ K.T
        rotations.append(R)
        views.append(x[:, :2] / x[:, 2:] + rng.normal(0, 0.3, (len(points), 2)))
    images = tmp_path / "images"
    images.mkdir()
    names = [f"view{k}.jpg" for k in range(6)]
    for name in names:
        cv2.imwrite(str(images / name), np.full((h, w), 128, np.uint8))
    pairs = []
    for i in range(6):
        for j in range(i + 1, 6):
            inside = [((v > 0) & (v < [w, h])).all(1) for v in (views[i], views[j])]
            ids = np.where(inside[0] & inside[1])[0]
            k0 = views[i][ids]
            k1 = views[j][ids] + rng.normal(0, 0.2, (len(ids), 2))
            bad = rng.choice(len(ids), len(ids) // 5, replace=False)
            k1[bad] = rng.uniform([0, 0], [w, h], (len(bad), 2))
            pairs.append(PairMatches(names[i], names[j], k0, k1, rng.uniform(0.2, 1, len(ids))))
    merged = merge_keypoints(pairs, grid=1.0)
    # the fixed image-0 side merged across pairs: far fewer keypoints than match ends
    ends = {n: sum(len(p.keypoints0) for p in pairs if n in (p.name0, p.name1)) for n in names}
    assert all(len(merged.keypoints[n]) < 0.8 * ends[n] for n in names[1:5])
    given = {name: K for name in names[:4]}  # two cameras left to COLMAP's guess
    written = write_colmap(merged, tmp_path / "sfm" / "database.db", images, given)
    assert written.given_k == tuple(names[:4]) and written.guessed == tuple(names[4:])
    with pycolmap.Database.open(written.database) as db:
        assert db.num_images() == 6 and db.num_matched_image_pairs() == 15
        keypoints = db.read_keypoints(written.image_ids["view0.jpg"])
        np.testing.assert_allclose(keypoints[:, :2], merged.keypoints["view0.jpg"] + 0.5)
        camera = db.read_camera(db.read_image(written.image_ids["view5.jpg"]).camera_id)
        assert camera.params[0] == pytest.approx(1.2 * w)  # COLMAP's guess, as documented
    assert verify_colmap(written) == 15
    model = reconstruct_colmap(written, images, tmp_path / "sfm" / "sparse")
    assert model is not None and model.num_reg_images() == 6
    got = {im.name: im.cam_from_world().rotation.matrix() for im in model.images.values()}
    errors = []
    for i in range(6):
        for j in range(i + 1, 6):
            rel = got[names[j]] @ got[names[i]].T
            true = rotations[j] @ rotations[i].T
            cos = np.clip((np.trace(rel.T @ true) - 1) / 2, -1, 1)
            errors.append(np.degrees(np.arccos(cos)))
    assert max(errors) < 1.0, errors


def test_colmap_needs_relative_image_names(tmp_path: Path) -> None:
    pytest.importorskip("pycolmap")
    from loftr_core.api.sfm import write_colmap

    _, pairs = _scene()
    merged = merge_keypoints(pairs)
    with pytest.raises(InputError, match="relative to the image folder"):
        write_colmap(merged, tmp_path / "db.db", tmp_path)
