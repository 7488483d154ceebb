"""Evaluation: the protocol on exact correspondences of the real pair, and ``loftr-eval`` end to
end with a checkpoint written by the test."""

from __future__ import annotations

import json
import math
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch

from loftr_core.api.checkpoint import save_native
from loftr_core.model import LoFTR
from loftr_core.model.config import LoFTRConfig
from loftr_data import MegaDepthDataset
from loftr_train.cli_eval import main
from loftr_train.evaluation import evaluate, format_table, write_pair_results
from loftr_train.metrics import pair_metrics, pose_auc

# Small images keep the end-to-end run fast on CPU.
E2E_RESIZE = 160


def _pair0(root: Path) -> dict[str, Any]:
    """Pair 0 of sample.npz straight from the file: original K, poses, depth."""
    info = np.load(root / "sample.npz", allow_pickle=True)
    a, b = (int(v) for v in info["pair_infos"][0][0])
    depth = [h5py.File(root / str(info["depth_paths"][k]), "r")["depth"][()] for k in (a, b)]
    return {
        "K0": info["intrinsics"][a].astype(np.float64),
        "K1": info["intrinsics"][b].astype(np.float64),
        "T_0to1": info["poses"][b] @ np.linalg.inv(info["poses"][a]),
        "depth0": depth[0].astype(np.float64),
        "depth1": depth[1].astype(np.float64),
    }


def _exact_correspondences(gt: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of image 0 on a 24-px lattice with depth, warped into image 1, kept where image
    1's depth agrees within 5 % (visible, not occluded)."""
    d0, d1 = gt["depth0"], gt["depth1"]
    ys, xs = np.mgrid[0 : d0.shape[0] : 24, 0 : d0.shape[1] : 24]
    p0 = np.c_[xs.ravel(), ys.ravel()].astype(np.float64)
    z0 = d0[ys.ravel(), xs.ravel()]
    p0, z0 = p0[z0 > 0], z0[z0 > 0]
    X = np.linalg.inv(gt["K0"]) @ np.c_[p0, np.ones(len(p0))].T * z0
    Y = gt["T_0to1"][:3, :3] @ X + gt["T_0to1"][:3, 3:4]
    y = gt["K1"] @ Y
    p1 = (y[:2] / y[2]).T
    r = np.round(p1).astype(int)
    inside = (r[:, 0] >= 0) & (r[:, 0] < d1.shape[1]) & (r[:, 1] >= 0) & (r[:, 1] < d1.shape[0])
    p0, p1, r, z = p0[inside], p1[inside], r[inside], Y[2][inside]
    d = d1[r[:, 1], r[:, 0]]
    ok = (d > 0) & (np.abs(d - z) < 0.05 * d)
    return p0[ok], p1[ok]


class _Oracle(torch.nn.Module):
    """Returns fixed keypoints (original pixels) whatever the images."""

    def __init__(self, kpts0: np.ndarray, kpts1: np.ndarray) -> None:
        super().__init__()
        self.k0 = torch.from_numpy(kpts0).float()
        self.k1 = torch.from_numpy(kpts1).float()
        self.seen: list[dict[str, Any]] = []

    def forward(self, data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self.seen.append(data)
        return {"keypoints0": self.k0, "keypoints1": self.k1}


@pytest.fixture(scope="module")
def sample_root(shared_data: Path) -> Path:
    return shared_data / "megadepth_sample"


def test_evaluate_exact_correspondences_recovers_the_pose(sample_root: Path) -> None:
    gt = _pair0(sample_root)
    k0, k1 = _exact_correspondences(gt)
    assert len(k0) > 300
    ds = MegaDepthDataset(
        sample_root, sample_root / "sample.npz", img_resize=320, pair_ids=[0], load_depth=False
    )
    oracle = _Oracle(k0, k1)
    result = evaluate(oracle, ds, progress=False)
    # The model saw the resized, padded images with their masks and scales.
    data = oracle.seen[0]
    assert data["image0"].shape == (1, 1, 320, 320) and data["mask0"].shape == (1, 40, 40)
    assert set(data) == {"image0", "image1", "mask0", "mask1", "scale0", "scale1"}
    (pm,) = result.pairs
    # Intrinsics rebuilt from the dataset's resized K equal the original ones: same numbers as
    # evaluating straight from sample.npz.
    direct = pair_metrics(k0, k1, gt["K0"], gt["K1"], gt["T_0to1"])
    assert pm.num_matches == direct.num_matches == len(k0)
    assert pm.precision == 1.0 == direct.precision
    # RANSAC on float32 keypoints (the model's dtype) vs float64 here: both essentially exact.
    assert max(pm.R_err, direct.R_err) < 0.05 and max(pm.t_err, direct.t_err) < 0.5
    assert result.summary["auc@5"] == pytest.approx(pose_auc([pm.pose_error])["auc@5"])
    assert result.summary["auc@5"] > 0.95
    assert result.summary["num_pairs"] == 1 and result.summary["mean_matches"] == len(k0)
    assert pm.identifier == "5122787062_7ef463a806_o.jpg#8583256543_96562c14f2_o.jpg"


def test_write_pair_results_and_table(tmp_path: Path) -> None:
    from loftr_train.evaluation import EvaluationResult
    from loftr_train.metrics import PairMetrics

    pairs = [
        PairMetrics("a#b", 12, np.zeros(12), 0.5, 1.0, 2.0, 9),
        PairMetrics("c#d", 0, np.zeros(0), 0.0, math.inf, math.inf, 0),
    ]
    result = EvaluationResult(
        pairs,
        {"auc@5": 0.8, "prec@5e-04": 0.25, "num_pairs": 2.0, "mean_matches": 6.0},
        ["s", "s"],
        [3, 4],
    )
    path = write_pair_results(result, tmp_path / "sub" / "r.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows[0] == {
        "identifier": "a#b",
        "scene_id": "s",
        "pair_id": 3,
        "num_matches": 12,
        "precision": 0.5,
        "R_err": 1.0,
        "t_err": 2.0,
        "pose_error": 2.0,
        "num_inliers": 9,
    }
    assert rows[1]["pose_error"] is None and rows[1]["R_err"] is None
    table = format_table(result.summary).splitlines()
    assert table[2] == "| auc@5        | 80.00 |"
    assert table[3] == "| prec@5e-04   | 25.00 |"
    assert table[4] == "| num_pairs    |     2 |"


def test_loftr_eval_end_to_end(
    sample_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.manual_seed(0)
    model = LoFTR(LoFTRConfig.outdoor_ds()).eval()
    ckpt = save_native(model, tmp_path / "model.safetensors")
    out = tmp_path / "pairs.jsonl"
    # thr 0: every mutual nearest neighbour of the random model is a match, so RANSAC runs.
    argv = [
        str(ckpt),
        "--data-root",
        str(sample_root),
        "--scene-info",
        str(sample_root / "sample.npz"),
        "--pair-ids",
        "0",
        "--img-resize",
        str(E2E_RESIZE),
        "--thr",
        "0",
        "--output",
        str(out),
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr()
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    # Same numbers as running the model by hand and scoring with the original K from the file.
    ds = MegaDepthDataset(
        sample_root,
        sample_root / "sample.npz",
        img_resize=E2E_RESIZE,
        pair_ids=[0],
        load_depth=False,
    )
    s = ds[0]
    model_thr0 = LoFTR(LoFTRConfig.outdoor_ds().replace(match_coarse={"thr": 0.0}))
    model_thr0.load_state_dict(model.state_dict())
    with torch.no_grad():
        pred = model_thr0.eval()(
            {k: s[k][None] for k in ("image0", "image1", "mask0", "mask1", "scale0", "scale1")}
        )
    gt = _pair0(sample_root)
    ref = pair_metrics(
        pred["keypoints0"], pred["keypoints1"], gt["K0"], gt["K1"], gt["T_0to1"], seed=0
    )
    assert row["num_matches"] == ref.num_matches > 5
    assert (row["estimator"], row["ransac_pixel_thr"], row["seed"]) == ("opencv", 0.5, 0)
    assert "pose: opencv at 0.5 px" in printed.out
    assert row["precision"] == pytest.approx(ref.precision)
    assert row["num_inliers"] == ref.num_inliers
    assert f"| mean_matches | {float(ref.num_matches):5.1f} |" in printed.out
    assert "auc@20" in printed.out and "loftr-eval" in printed.err  # table + tqdm bar


def test_loftr_eval_reports_bad_inputs(
    sample_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--data-root", str(sample_root), "--scene-info", str(sample_root / "sample.npz")]
    assert main([str(tmp_path / "missing.ckpt"), *base, "--pair-ids", "0"]) == 2
    assert "missing.ckpt" in capsys.readouterr().err
    (tmp_path / "x.ckpt").write_bytes(b"not read: the data errors come first")
    assert main([str(tmp_path / "x.ckpt"), *base, "--pair-ids", "zero"]) == 2
    assert "--pair-ids" in capsys.readouterr().err
    # Pair 1 of sample.npz references images that are not shipped.
    assert main([str(tmp_path / "x.ckpt"), *base, "--pair-ids", "1"]) == 2
    assert "sample.npz" in capsys.readouterr().err
    # MegaDepth-1500 index without its images under the root: says which files are missing.
    index = sample_root.parent / "megadepth1500_index"
    assert (
        main([str(tmp_path / "x.ckpt"), "--data-root", str(sample_root), "--index-dir", str(index)])
        == 2
    )
    assert "Undistorted_SfM/0022/images" in capsys.readouterr().err


def test_console_script_is_registered() -> None:
    (ep,) = entry_points(group="console_scripts", name="loftr-eval")
    assert ep.value == "loftr_train.cli_eval:main"


def test_evaluate_with_poselib_is_recorded_in_every_line(sample_root: Path, tmp_path: Path) -> None:
    """The LO-RANSAC estimator by name: the exact correspondences give the pose, and each
    per-pair line says which estimator, threshold and seed produced it."""
    pytest.importorskip("poselib")
    gt = _pair0(sample_root)
    k0, k1 = _exact_correspondences(gt)
    ds = MegaDepthDataset(
        sample_root, sample_root / "sample.npz", img_resize=320, pair_ids=[0], load_depth=False
    )
    result = evaluate(
        _Oracle(k0, k1), ds, progress=False, estimator="poselib", ransac_pixel_thr=1.0, seed=7
    )
    (pm,) = result.pairs
    assert max(pm.R_err, pm.t_err) < 0.5 and result.summary["auc@5"] > 0.9
    assert pm.num_inliers >= 0.95 * len(k0)
    out = write_pair_results(result, tmp_path / "p.jsonl")
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["estimator"] == "poselib" and row["ransac_pixel_thr"] == 1.0 and row["seed"] == 7
    from loftr_core.errors import InputError

    with pytest.raises(InputError, match="unknown pose estimator"):
        evaluate(_Oracle(k0, k1), ds, progress=False, estimator="magsac")
