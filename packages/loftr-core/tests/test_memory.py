"""The memory check before a call: runaway inputs stop in seconds with one line that says the fix.

The estimate's accuracy against measured peaks is shown by ``benchmarks/bench.py`` (its memory
table); here: the decisions, the messages, and the invariants of the estimate.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from loftr_core.api import memory
from loftr_core.api.matcher import Matcher
from loftr_core.api.memory import MemoryLimit, MemoryLimitError, estimate_peak_bytes
from loftr_core.cli import match as cli
from loftr_core.errors import ConfigError, InputError
from loftr_core.execution import ExecutionOptions
from loftr_core.model import LoFTR
from loftr_core.model.config import LoFTRConfig

GIB = 2**30


@pytest.fixture(scope="module")
def outdoor() -> LoFTR:
    torch.manual_seed(0)
    return LoFTR(LoFTRConfig.outdoor_ds()).eval()


def _shape(w: int, h: int, n: int = 1) -> tuple[int, int, int, int]:
    return (n, 1, h, w)


def test_estimate_grows_with_pixels_batch_and_budget(outdoor: LoFTR) -> None:
    sizes = [(320, 240), (640, 480), (1024, 768), (1600, 1200), (5000, 4000)]
    estimates = [estimate_peak_bytes(outdoor, _shape(*s), _shape(*s)) for s in sizes]
    assert estimates == sorted(estimates) and len(set(estimates)) == len(estimates)
    # the known answers of the fitted model: 640x480 ~ 558 MiB, a 5000x4000 pair ~ 12.8 GiB
    assert estimates[1] / 2**20 == pytest.approx(557.5, abs=1)
    assert estimates[-1] / GIB == pytest.approx(12.76, abs=0.05)
    # a batch of two pairs needs more than one pair
    assert estimate_peak_bytes(outdoor, _shape(640, 480, 2), _shape(640, 480, 2)) > estimates[1]
    # a larger dual-softmax budget (e.g. a GPU-sized one) costs its bytes
    wide = LoFTR(LoFTRConfig.outdoor_ds(), ExecutionOptions(coarse_chunk_elements=1 << 28))
    big = _shape(1600, 1200)
    extra = estimate_peak_bytes(wide, big, big) - estimate_peak_bytes(outdoor, big, big)
    assert extra == 8 * ((1 << 28) - (1 << 25))
    # narrower models need less
    small = LoFTR(
        LoFTRConfig.outdoor_ds().replace(
            resnetfpn={"initial_dim": 32, "block_dims": (32, 48, 64)},
            coarse={"d_model": 64, "nhead": 4},
            fine={"d_model": 32, "nhead": 2},
        )
    )
    assert estimate_peak_bytes(small, big, big) < estimate_peak_bytes(outdoor, big, big)


def test_a_runaway_pair_stops_in_seconds_with_the_fix(outdoor: LoFTR) -> None:
    image = np.zeros((4000, 5000), np.uint8)
    matcher = Matcher(outdoor, memory_limit=8)  # what "auto" is on a machine with >= 9 GiB free
    start = time.perf_counter()
    with pytest.raises(MemoryLimitError) as caught:
        matcher.match(image, image)
    assert time.perf_counter() - start < 10  # the model never ran
    message = str(caught.value)
    assert "\n" not in message and isinstance(caught.value, InputError)
    for needle in (
        "5000x4000 and 5000x4000 px",
        "needs about 12.8 GiB",
        "above 8.0 GiB (the limit you set)",
        "Matcher(resize=1600), loftr-match --resize 1600: about 1.6 GiB",
        "memory_limit=GIB or None",
        "--memory-limit GIB|none",
    ):
        assert needle in message, (needle, message)
    # the suggested resize passes the same check
    resized = Matcher(outdoor, resize=1600)
    prepared = resized._prepare(image, "image0")
    assert prepared.image.shape == (1280, 1600)
    estimate = MemoryLimit().check(outdoor, (1, 1, 1280, 1600), (1, 1, 1280, 1600), "cpu")
    assert estimate / GIB == pytest.approx(1.62, abs=0.02)


def test_the_limit_can_be_set_and_lifted(outdoor: LoFTR) -> None:
    rng = np.random.default_rng(0)
    image = cv2.resize(rng.integers(0, 256, (60, 80), dtype=np.uint8), (640, 480))
    with pytest.raises(MemoryLimitError, match=r"above 0\.3 GiB \(the limit you set\)"):
        Matcher(outdoor, memory_limit=0.3).match(image, image)
    lifted = Matcher(outdoor, memory_limit=None, threshold=0.0).match(image, image)
    default = Matcher(outdoor, threshold=0.0).match(image, image)
    assert len(lifted) == len(default) > 0
    np.testing.assert_array_equal(lifted.keypoints1, default.keypoints1)
    for bad in (0, -1, "lots", float("nan"), True):
        with pytest.raises(ConfigError, match="memory limit"):
            Matcher(outdoor, memory_limit=bad)  # type: ignore[arg-type]
    assert MemoryLimit.parse("12.5GiB").setting == 12.5
    assert MemoryLimit.parse("NONE").setting is None


def test_auto_takes_the_available_memory_when_it_is_less(
    outdoor: LoFTR, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(memory, "available_memory_bytes", lambda device="cpu": int(0.4 * GIB))
    limit, why = MemoryLimit().bytes_for("cpu")
    assert limit == pytest.approx(0.36 * GIB) and why == "90% of the 0.4 GiB available"
    with pytest.raises(MemoryLimitError, match=r"90% of the 0\.4 GiB available"):
        MemoryLimit().check(outdoor, _shape(640, 480), _shape(640, 480), "cpu")
    monkeypatch.setattr(memory, "available_memory_bytes", lambda device="cpu": 64 * GIB)
    assert MemoryLimit().bytes_for("cpu")[0] == memory.DEFAULT_LIMIT_GIB * GIB
    monkeypatch.setattr(memory, "available_memory_bytes", lambda device="cpu": None)
    assert MemoryLimit().bytes_for("cpu")[0] == memory.DEFAULT_LIMIT_GIB * GIB


def test_available_memory_is_read_on_linux() -> None:
    available = memory.available_memory_bytes("cpu")
    if not Path("/proc/meminfo").is_file():
        pytest.skip("no /proc/meminfo")
    assert available is not None and 0 < available < 1 << 50


def test_loftr_match_memory_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], outdoor: LoFTR
) -> None:
    from loftr_core.api.checkpoint import save_native

    weights = save_native(outdoor, tmp_path / "w.safetensors")
    rng = np.random.default_rng(1)
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), cv2.resize(rng.integers(0, 256, (60, 80), dtype=np.uint8), (640, 480)))
    argv = [str(path), str(path), "--weights", str(weights)]
    assert cli.main([*argv, "--memory-limit", "0.3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("loftr-match: error: matching images of 640x480")
    assert "--memory-limit GIB|none" in err[0]
    assert cli.main([*argv, "--memory-limit", "none"]) == 0
    assert capsys.readouterr().out.startswith("matches: ")
    assert cli.main([*argv, "--memory-limit", "x"]) == 2
    assert "memory limit 'x'" in capsys.readouterr().err
