"""The built-in backends, registered directly by the plugin manager (not via entry points)."""

from __future__ import annotations

from loftr_attention.hookspecs import hookimpl
from loftr_attention.linear_attention import LinearAttention
from loftr_attention.sdpa_attention import FlashAttention, MemoryEfficientAttention, SDPAttention
from loftr_attention.softmax_attention import FullAttention
from loftr_attention.spec import BackendSpec

__all__ = ["loftr_attention_backends"]


@hookimpl
def loftr_attention_backends() -> list[BackendSpec]:
    """The five built-in backends: ``linear`` and four exact softmax backends."""
    return [
        BackendSpec(
            "linear",
            LinearAttention,
            "LoFTR's linear attention (elu+1); the official checkpoints use it. Not softmax.",
        ),
        BackendSpec("full", FullAttention, "Plain softmax attention; materialises (B,H,L,S)."),
        BackendSpec("flash", FlashAttention, "SDPA restricted to the flash kernel (CPU, CUDA)."),
        BackendSpec(
            "memory_efficient",
            MemoryEfficientAttention,
            "CUDA: SDPA memory-efficient kernel; CPU: exact query-chunked softmax.",
        ),
        BackendSpec("sdpa", SDPAttention, "scaled_dot_product_attention, torch's kernel choice."),
    ]
