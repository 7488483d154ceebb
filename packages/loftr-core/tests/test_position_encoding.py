"""Sine positional encodings: identical to the original table, any size, no state."""

from __future__ import annotations

import math

import pytest
import torch

from loftr_core.model import LoFTR
from loftr_core.model.config import LoFTRConfig
from loftr_core.model.position_encoding import (
    PositionEncodingSine,
    detr_encoding,
    loftr_sine_encoding,
)


@pytest.mark.parametrize("temp_bug_fix", [False, True])
def test_equals_the_original_256x256_table(temp_bug_fix: bool) -> None:
    kornia_pe = pytest.importorskip("kornia.feature.loftr.utils.position_encoding")
    table = kornia_pe.PositionEncodingSine(256, temp_bug_fix=temp_bug_fix).pe  # (1,256,256,256)
    assert torch.equal(loftr_sine_encoding(256, 256, 256, temp_bug_fix), table)
    # and every crop of it (what the original adds for an (Hc, Wc) map)
    assert torch.equal(loftr_sine_encoding(256, 60, 80, temp_bug_fix), table[:, :, :60, :80])


def test_known_values_of_both_variants() -> None:
    # buggy: div_k = exp(-2k); fixed: div_k = 10000^(-2k/128); channel 4k+m, m = sin x, cos x, sin y, cos y
    y, x = 6, 9  # 0-based cell -> 1-based positions 7, 10
    for fix, div in [
        (False, lambda k: math.exp(-2 * k)),
        (True, lambda k: 10000 ** (-2 * k / 128)),
    ]:
        pe = loftr_sine_encoding(256, 8, 12, fix, dtype=torch.float64)[0, :, y, x]
        for k in (0, 1, 5, 63):
            want = [
                math.sin(10 * div(k)),
                math.cos(10 * div(k)),
                math.sin(7 * div(k)),
                math.cos(7 * div(k)),
            ]
            got = pe[4 * k : 4 * k + 4].tolist()
            assert got == pytest.approx(want, abs=2e-6), (fix, k)


def test_beyond_2048_pixels() -> None:
    """The original table stops at 256 coarse cells; ours continues the same formula.

    (float32 arguments as in the original: x * div carries ~3e-5 relative rounding at x = 300.)
    """
    pe = loftr_sine_encoding(256, 4, 300, True, dtype=torch.float64)
    x = 300  # last column, 1-based
    assert pe[0, 0, 0, -1].item() == pytest.approx(math.sin(x), abs=1e-4)
    assert pe[0, 5, 0, -1].item() == pytest.approx(math.cos(x * 10000 ** (-2 / 128)), abs=1e-4)
    out = PositionEncodingSine(256, True)(torch.zeros(1, 256, 3, 300))
    assert torch.equal(out, loftr_sine_encoding(256, 3, 300, True))


def test_encoding_is_not_part_of_the_state_dict_and_keeps_dtype() -> None:
    model = LoFTR(LoFTRConfig.indoor_ds_new())
    assert not any("pos_encoding" in k for k in model.state_dict())
    x = torch.zeros(1, 256, 5, 7, dtype=torch.bfloat16)
    assert model.pos_encoding(x).dtype == torch.bfloat16


def test_detr_encoding() -> None:
    """DETR style: y in the first half, x in the second; positions normalised to (0, 2π]."""
    h, w = 6, 10
    pe = detr_encoding(256, h, w, dtype=torch.float64)[0]
    assert pe.shape == (256, h, w)
    # channel 0 = sin(y_norm), channel 1 = cos(y_norm), channel 128 = sin(x_norm)
    y_norm = 3 / (h + 1e-6) * 2 * math.pi  # row 2 -> position 3
    x_norm = 5 / (w + 1e-6) * 2 * math.pi  # col 4 -> position 5
    assert pe[0, 2, 4].item() == pytest.approx(math.sin(y_norm), abs=1e-5)
    assert pe[1, 2, 4].item() == pytest.approx(math.cos(y_norm), abs=1e-5)
    assert pe[128, 2, 4].item() == pytest.approx(math.sin(x_norm), abs=1e-5)
    # frequency pair k uses temperature ** (2k / 128)
    f = 10000 ** (2 * 3 / 128)
    assert pe[128 + 6, 2, 4].item() == pytest.approx(math.sin(x_norm / f), abs=1e-5)
    assert pe[128 + 7, 2, 4].item() == pytest.approx(math.cos(x_norm / f), abs=1e-5)
    # normalised: the last row/column encodes 2π whatever the size
    assert detr_encoding(256, 3, 40)[0, 0, -1, 0].item() == pytest.approx(0.0, abs=1e-4)
    model = LoFTR(LoFTRConfig.modern())
    assert model.pos_encoding.kind == "detr"
