"""Metrics: epipolar precision, per-pair pose metrics, pose AUC (known answers)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from loftr_train.metrics import (
    EPI_ERR_THR,
    PairMetrics,
    aggregate_metrics,
    epipolar_precision,
    pair_metrics,
    pose_auc,
)


def _rot_z(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])


def _rot_y(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), 0.0, np.sin(a)], [0.0, 1.0, 0.0], [-np.sin(a), 0.0, np.cos(a)]])


def _scene(n: int = 200, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Random 3-D points seen by two cameras with a known relative pose."""
    rng = np.random.default_rng(seed)
    X = np.stack([rng.uniform(-2, 2, n), rng.uniform(-1.5, 1.5, n), rng.uniform(4, 8, n)], axis=1)
    T = np.eye(4)
    T[:3, :3] = _rot_y(8.0) @ _rot_z(3.0)
    T[:3, 3] = [-0.6, 0.05, 0.1]
    K0 = np.array([[500.0, 0, 320], [0, 510.0, 240], [0, 0, 1]])
    K1 = np.array([[600.0, 0, 300], [0, 590.0, 250], [0, 0, 1]])
    x0 = (K0 @ X.T).T
    X1 = (T[:3, :3] @ X.T).T + T[:3, 3]
    x1 = (K1 @ X1.T).T
    return x0[:, :2] / x0[:, 2:], x1[:, :2] / x1[:, 2:], K0, K1, T


def test_epipolar_precision_counts_strictly_below_threshold() -> None:
    errs = np.array([0.0, 4.9e-4, 5e-4, 1.0, np.inf])
    assert epipolar_precision(errs) == pytest.approx(2 / 5)
    assert epipolar_precision(np.array([])) == 0.0
    assert EPI_ERR_THR == 5e-4


def test_pair_metrics_exact_matches_give_zero_error() -> None:
    p0, p1, K0, K1, T = _scene()
    m = pair_metrics(p0, p1, K0, K1, T, identifier="a#b")
    assert m.num_matches == 200
    assert m.precision == 1.0
    assert float(np.max(m.epi_errs)) < 1e-12
    assert m.R_err < 0.05 and m.t_err < 0.1
    assert m.num_inliers == 200


def test_pair_metrics_hand_computed_epipolar_distance() -> None:
    # Pure x-translation, identity K and rotation: E = [t]x. Match (0,0) <-> (0.1,0.2):
    # E x0 = (0,-1,0), x1.E x0 = -0.2, E^T x1 = (0,1,-0.2) -> d = 0.04 * (1 + 1) = 0.08.
    T = np.eye(4)
    T[0, 3] = 1.0
    m = pair_metrics(np.array([[0.0, 0.0]]), np.array([[0.1, 0.2]]), np.eye(3), np.eye(3), T)
    assert m.epi_errs[0] == pytest.approx(0.08)
    assert m.precision == 0.0
    # Fewer than 5 matches: pose failure, infinite errors.
    assert math.isinf(m.R_err) and math.isinf(m.t_err) and m.num_inliers == 0


def test_pair_metrics_outliers_are_rejected_by_ransac() -> None:
    p0, p1, K0, K1, T = _scene(300, seed=1)
    rng = np.random.default_rng(2)
    p1 = p1.copy()
    p1[:60] += rng.uniform(20, 60, (60, 2))  # 20 % gross outliers
    m = pair_metrics(p0, p1, K0, K1, T)
    assert m.precision == pytest.approx(240 / 300)
    assert m.R_err < 0.1 and m.t_err < 0.5
    assert 235 <= m.num_inliers <= 245


def test_pose_auc_hand_computed() -> None:
    # errors 0,1,3,12,inf with recall 0,.25,.5,.75,1:
    # @5:  x=[0,1,3,5],   y=[0,.25,.5,.5]  -> (.125 + .75 + 1.0) / 5 = 0.375
    # @10: x=[0,1,3,10],  y=[0,.25,.5,.5]  -> (.125 + .75 + 3.5) / 10 = 0.4375
    # @20: x=[0,1,3,12,20], y=[0,.25,.5,.75,.75] -> (.125+.75+5.625+6) / 20 = 0.625
    auc = pose_auc([12.0, 1.0, math.inf, 3.0])
    assert auc == pytest.approx({"auc@5": 0.375, "auc@10": 0.4375, "auc@20": 0.625})
    assert pose_auc([0.0, 0.0]) == pytest.approx({"auc@5": 1.0, "auc@10": 1.0, "auc@20": 1.0})
    assert pose_auc([math.inf] * 3) == {"auc@5": 0.0, "auc@10": 0.0, "auc@20": 0.0}
    # A single pair with error 2: recall 1 from 2 deg on -> @5 = (0.5*2*1 + 3*1)/5 = 0.8.
    assert pose_auc([2.0], (5,)) == pytest.approx({"auc@5": 0.8})
    with pytest.raises(ValueError, match="> 0"):
        pose_auc([1.0], (0,))


def _pm(ident: str, err: float, prec: float, n: int) -> PairMetrics:
    return PairMetrics(ident, n, np.zeros(n), prec, err, err / 2, n // 2)


def test_aggregate_deduplicates_by_identifier_last_wins() -> None:
    pairs = [_pm("a#b", 100.0, 0.0, 10), _pm("c#d", 3.0, 0.5, 20), _pm("a#b", 1.0, 1.0, 30)]
    agg = aggregate_metrics(pairs)
    ref = pose_auc([1.0, 3.0])
    assert agg["auc@5"] == pytest.approx(ref["auc@5"])
    assert agg["prec@5e-04"] == pytest.approx(0.75)
    assert agg["num_pairs"] == 2
    assert agg["mean_matches"] == pytest.approx(25.0)
    assert agg["mean_inliers"] == pytest.approx(12.5)
    js = _pm("x#y", math.inf, 0.0, 0).to_json()
    assert js["R_err"] is None and js["pose_error"] is None


def test_pose_auc_equals_the_original_formula_on_random_errors() -> None:
    trapezoid = getattr(np, "trapezoid", None) or np.trapz  # noqa: NPY201 (numpy < 2)
    rng = np.random.default_rng(0)
    for _ in range(50):
        errs = list(rng.exponential(8.0, rng.integers(1, 40)))
        errs += [math.inf] * int(rng.integers(0, 5))
        e = [0.0, *sorted(errs)]
        recall = list(np.linspace(0, 1, len(e)))
        expected = {}
        for thr in (5, 10, 20):
            last = int(np.searchsorted(e, thr))
            expected[f"auc@{thr}"] = (
                trapezoid([*recall[:last], recall[last - 1]], [*e[:last], thr]) / thr
            )
        assert pose_auc(errs) == pytest.approx(expected, abs=1e-12)
