"""LR scaling, warm-up and multi-step decay (spec section 7)."""

from __future__ import annotations

import pytest
import torch

from loftr_train.schedule import LRSchedule, scaled_lr_and_warmup


def test_scaling_matches_the_original_examples() -> None:
    assert scaled_lr_and_warmup(8e-3, 64, 64, 1875) == (pytest.approx(8e-3), 1875)
    lr, warm = scaled_lr_and_warmup(8e-3, 64, 4, 1875)  # 4 GPUs x batch 1
    assert lr == pytest.approx(5e-4)
    assert warm == 30000
    lr, warm = scaled_lr_and_warmup(6e-3, 64, 24, 4800)
    assert lr == pytest.approx(2.25e-3)
    assert warm == 12800  # floor(4800 / 0.375)


def test_linear_warmup_then_multistep() -> None:
    s = LRSchedule(true_lr=1.0, warmup_steps=10, warmup_ratio=0.1, milestones=[2, 4], gamma=0.5)
    assert s.lr_at(0, 0) == pytest.approx(0.1)
    assert s.lr_at(5, 0) == pytest.approx(0.1 + 0.5 * 0.9)
    last = 0.1 + 0.9 * 9 / 10
    assert s.lr_at(9, 0) == pytest.approx(last)
    # after warm-up the LR stays at the last warm-up value (the original), then halves per milestone
    assert s.lr_at(10, 0) == pytest.approx(last)
    assert s.lr_at(500, 1) == pytest.approx(last)
    assert s.lr_at(500, 2) == pytest.approx(last / 2)
    assert s.lr_at(500, 3) == pytest.approx(last / 2)
    assert s.lr_at(500, 4) == pytest.approx(last / 4)
    assert s.lr_at(500, 40) == pytest.approx(last / 4)


def test_no_warmup_and_constant_warmup() -> None:
    assert LRSchedule(true_lr=2.0, warmup_steps=0).lr_at(0, 0) == pytest.approx(2.0)
    c = LRSchedule(true_lr=2.0, warmup_steps=5, warmup_ratio=0.25, warmup_type="constant")
    assert [c.lr_at(i, 0) for i in (0, 4, 5)] == pytest.approx([0.5, 0.5, 2.0])


def test_apply_sets_every_group() -> None:
    p1, p2 = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([{"params": [p1]}, {"params": [p2]}], lr=123.0)
    s = LRSchedule(true_lr=1.0, warmup_steps=4, warmup_ratio=0.0)
    assert s.apply(opt, 2, 0) == pytest.approx(0.5)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.5, 0.5])
