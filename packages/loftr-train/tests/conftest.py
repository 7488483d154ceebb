"""Shared fixtures of the loftr-train tests."""

from __future__ import annotations

import copy
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _offline_weights(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No test (nor its subprocesses) downloads weights or touches the user's weights cache."""
    monkeypatch.setenv("LOFTR_HOME", str(tmp_path_factory.mktemp("loftr_home")))
    monkeypatch.setenv("LOFTR_OFFLINE", "1")
    monkeypatch.delenv("LOFTR_WEIGHTS_MIRROR", raising=False)


#: The fault-injection callbacks and the script that trains with them (see its docstring).
FAULT_DRIVER = Path(__file__).resolve().with_name("fault_driver.py")

#: A tiny synthetic-homography run (16-px-channel model, 64x64 images) that trains in seconds.
_TINY: dict[str, Any] = {
    "model": {
        "preset": "default",
        "options": {
            "resnetfpn": {"initial_dim": 16, "block_dims": [16, 24, 32]},
            "coarse": {"d_model": 32, "nhead": 2, "layer_names": ["self", "cross"]},
            "fine": {"d_model": 16, "nhead": 2, "layer_names": ["self", "cross"]},
            "match_coarse": {
                "train_coarse_percent": 0.3,
                "train_pad_num_gt_min": 8,
                "border_rm": 1,
            },
        },
    },
    "data": {
        "dataset": "synthetic",
        "synthetic": {"size": [64, 64]},
        "synthetic_train": {"length": 10, "seed": 0},
        "synthetic_val": {"length": 4, "seed": 99, "photometric": None},
        "batch_size": 2,
        "val_batch_size": 2,
        "num_workers": 0,
        "pin_memory": False,
    },
    # every pair exactly once per epoch (n_samples_per_subset == train length)
    "sampler": {"n_samples_per_subset": 10, "replacement": False, "seed": 3},
    "optim": {"canonical_lr": 0.064},  # lr 2e-3 at batch 2
    "schedule": {"warmup_step": 1, "milestones": [1]},  # 32 warm-up steps at batch 2 (x 64/2)
    "trainer": {"max_epochs": 2, "device": "cpu", "num_threads": 1, "dist_timeout_s": 60},
    "checkpoint": {"every_n_steps": 3, "every_n_epochs": 1, "monitor": "prec@3px"},
    "logging": {"progress_bar": False, "tensorboard": False, "log_sample_ids": True},
}


def make_tiny_config(
    n_train: int = 10, n_val: int = 4, tensorboard: bool = False
) -> dict[str, Any]:
    """A fresh copy of the tiny training config with ``n_train`` pairs seen once per epoch."""
    cfg = copy.deepcopy(_TINY)
    cfg["data"]["synthetic_train"]["length"] = n_train
    cfg["data"]["synthetic_val"]["length"] = n_val
    cfg["sampler"]["n_samples_per_subset"] = n_train
    cfg["logging"]["tensorboard"] = tensorboard
    return cfg


@pytest.fixture
def tiny_config() -> Callable[..., dict[str, Any]]:
    """Factory for the tiny training config (see :func:`make_tiny_config`)."""
    return make_tiny_config


@pytest.fixture(scope="session")
def faults() -> ModuleType:
    """The :mod:`fault_driver` module (its callbacks, for in-process runs)."""
    name = "loftr_train_tests_fault_driver"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, FAULT_DRIVER)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def fault_driver() -> Path:
    """Path of the fault-injection driver script (run it with python or torchrun)."""
    return FAULT_DRIVER
