"""Shared fixtures of the loftr-core tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pytest
import torch

from loftr_core.api import pretrained

#: The shipped public mirrors, captured before the fixture below empties them.
SHIPPED_MIRRORS = pretrained.DEFAULT_MIRRORS


@pytest.fixture
def shipped_mirrors() -> tuple[str, ...]:
    """:data:`loftr_core.api.pretrained.DEFAULT_MIRRORS` as shipped (tests see it emptied)."""
    return SHIPPED_MIRRORS


@pytest.fixture(autouse=True)
def _no_weights_download(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No test reaches the public mirrors or the user's cache: an empty cache folder per test,
    no default mirrors, and ``LOFTR_OFFLINE=1`` (also for subprocesses); tests that download
    lift it and serve the files from a loopback server."""
    monkeypatch.setenv(pretrained.ENV_HOME, str(tmp_path_factory.mktemp("loftr_home")))
    monkeypatch.delenv(pretrained.ENV_MIRROR, raising=False)
    monkeypatch.setenv(pretrained.ENV_OFFLINE, "1")
    monkeypatch.setattr(pretrained, "DEFAULT_MIRRORS", ())


def _einsum_linear_attention(
    self: Any,
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    q_mask: torch.Tensor | None = None,
    kv_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The original LoFTR LinearAttention formula (kornia's short-sequence einsum branch)."""
    q = torch.nn.functional.elu(queries) + 1
    k = torch.nn.functional.elu(keys) + 1
    if q_mask is not None:
        q = q * q_mask[:, :, None, None]
    if kv_mask is not None:
        k = k * kv_mask[:, :, None, None]
        values = values * kv_mask[:, :, None, None]
    v_length = values.size(1)
    values = values / v_length
    kv = torch.einsum("nshd,nshv->nhdv", k, values)
    z = 1 / (torch.einsum("nlhd,nhd->nlh", q, k.sum(dim=1)) + self.eps)
    return (torch.einsum("nlhd,nhdv->nlhv", q, kv) * z[..., None] * v_length).contiguous()


@pytest.fixture(scope="session")
def original_kornia_attention() -> Callable[[], AbstractContextManager[Any]]:
    """Context-manager factory: inside it kornia's ``LinearAttention`` uses the original formula.

    kornia 0.9 rewrites linear attention for long sequences as large matrix products, which moves
    confidences by up to ~1e-5; the original formula is the reference the checkpoints were
    trained with. Yields kornia's ``transformer`` module.
    """
    transformer = pytest.importorskip("kornia.feature.loftr.loftr_module.transformer")
    attention = pytest.importorskip("kornia.feature.loftr.loftr_module.linear_attention")

    @contextmanager
    def patched() -> Iterator[Any]:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(attention.LinearAttention, "forward", _einsum_linear_attention)
            yield transformer

    return patched


def _randomize_batchnorm(model: torch.nn.Module, spread: float = 0.1) -> None:
    """Non-trivial BN statistics and affine parameters, so that BN is not the identity."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-spread, spread)  # type: ignore[union-attr]
                m.running_var.uniform_(0.5, 2.0)  # type: ignore[union-attr]
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-spread, spread)


@pytest.fixture
def randomize_batchnorm() -> Callable[..., None]:
    """``randomize_batchnorm(model, spread=0.1)``: random BN statistics and affine parameters."""
    return _randomize_batchnorm
