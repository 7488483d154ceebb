"""Unsupported or malformed input is a clear error, never a silent fallback; dropout semantics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import pytest
import torch

from loftr_attention import (
    AttentionInputError,
    BackendOptionError,
    DeviceSupport,
    FlashAttention,
    FullAttention,
    UnsupportedInputError,
    get_backend,
    get_spec,
)

BUILTINS = ("linear", "full", "flash", "memory_efficient", "sdpa")


def _qkv(dtype: torch.dtype = torch.float32, b: int = 2, length: int = 6, source: int = 9):
    g = torch.Generator().manual_seed(0)
    return tuple(torch.randn(b, 4, n, 8, generator=g).to(dtype) for n in (length, source, source))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_memory_efficient_half_on_cpu_is_a_clear_error(dtype: torch.dtype) -> None:
    q, k, v = _qkv(dtype)
    with pytest.raises(UnsupportedInputError) as info:
        get_backend("memory_efficient")(q, k, v)
    message = str(info.value)
    assert str(dtype) in message and "cpu" in message
    assert "torch.float32" in message and "torch.float64" in message
    assert not get_spec("memory_efficient").supports("cpu", dtype)
    assert get_spec("memory_efficient").supports("cuda", dtype)


@pytest.mark.parametrize("name", BUILTINS)
def test_float_mask_is_rejected(name: str) -> None:
    q, k, v = _qkv()
    with pytest.raises(AttentionInputError, match=r"kv_mask must be torch\.bool"):
        get_backend(name)(q, k, v, kv_mask=torch.ones(2, 9))
    with pytest.raises(AttentionInputError, match=r"q_mask must be torch\.bool"):
        get_backend(name)(q, k, v, q_mask=torch.zeros(2, 6, dtype=torch.int64))


@pytest.mark.parametrize("name", BUILTINS)
def test_malformed_shapes_are_rejected(name: str) -> None:
    q, k, v = _qkv()
    backend = get_backend(name)
    with pytest.raises(AttentionInputError, match="4-D"):
        backend(q[0], k[0], v[0])
    with pytest.raises(AttentionInputError, match="incompatible shapes"):
        backend(q, k[:, :, :, :4], v)
    with pytest.raises(AttentionInputError, match="incompatible shapes"):
        backend(q, k, v[:, :, :5])
    with pytest.raises(AttentionInputError, match="one dtype"):
        backend(q, k.double(), v)
    with pytest.raises(AttentionInputError, match=r"kv_mask must have shape \(2, 9\)"):
        backend(q, k, v, kv_mask=torch.ones(2, 6, dtype=torch.bool))


class NoMasksOnCpu(FullAttention):
    support: ClassVar[Mapping[str, DeviceSupport]] = {
        "cpu": DeviceSupport(frozenset({torch.float32}), masks=False)
    }


def test_masks_declared_unsupported_raise_a_clear_error() -> None:
    q, k, v = _qkv()
    out = NoMasksOnCpu()(q, k, v)
    torch.testing.assert_close(out, FullAttention()(q, k, v), rtol=0, atol=0)
    with pytest.raises(
        UnsupportedInputError, match="kv_mask given, but masks are not supported on cpu"
    ):
        NoMasksOnCpu()(q, k, v, kv_mask=torch.ones(2, 9, dtype=torch.bool))
    with pytest.raises(UnsupportedInputError, match="q_mask given"):
        NoMasksOnCpu()(q, k, v, q_mask=torch.ones(2, 6, dtype=torch.bool))


def test_flash_declares_no_masks_and_half_only_on_cuda() -> None:
    # The CUDA flash kernel takes no attn_mask and no float32: declared, hence a clear error there.
    cuda = FlashAttention.support["cuda"]
    assert cuda.masks is False
    assert cuda.dtypes == {torch.float16, torch.bfloat16}
    # On CPU, torch 2.13's flash kernel accepts a boolean mask (checked by the conformance kit).
    assert FlashAttention.support["cpu"].masks is True


@pytest.mark.gpu
def test_flash_mask_on_cuda_is_a_clear_error() -> None:
    q, k, v = (t.cuda() for t in _qkv(torch.float16))
    with pytest.raises(UnsupportedInputError, match="masks are not supported on cuda"):
        get_backend("flash")(q, k, v, kv_mask=torch.ones(2, 9, dtype=torch.bool, device="cuda"))


def test_unsupported_device_is_a_clear_error() -> None:
    q, k, v = (t.to("meta") for t in _qkv())
    with pytest.raises(UnsupportedInputError, match="device type 'meta' is not supported"):
        get_backend("full")(q, k, v)


@pytest.mark.parametrize("name", ["full", "flash", "memory_efficient", "sdpa"])
def test_dropout_only_in_training(name: str) -> None:
    q, k, v = _qkv(length=40, source=40)
    plain = get_backend(name).eval()(q, k, v)
    backend = get_backend(name, dropout=0.5)
    torch.testing.assert_close(backend.eval()(q, k, v), plain, rtol=0, atol=1e-6)
    backend.train()
    if name == "flash":  # torch's CPU flash kernel has no dropout: a clear error, no fallback
        with pytest.raises(UnsupportedInputError, match=r"dropout=0\.5 in training mode"):
            backend(q, k, v)
        return
    torch.manual_seed(0)
    trained = backend(q, k, v)
    assert (trained - plain).abs().max().item() > 0.1
    # Dropout keeps the expectation: the mean over many draws approaches the eval output.
    mean = torch.stack([backend(q, k, v) for _ in range(100)]).mean(0)
    assert (mean - plain).abs().mean().item() < 0.1 * plain.abs().mean().item()


@pytest.mark.parametrize("bad", [-0.1, 1.0, 2.0])
def test_invalid_dropout_rejected(bad: float) -> None:
    with pytest.raises(BackendOptionError, match="dropout must be in"):
        get_backend("full", dropout=bad)


def test_invalid_chunk_size_rejected() -> None:
    with pytest.raises(BackendOptionError, match="max_chunk_elements"):
        get_backend("memory_efficient", max_chunk_elements=0)
