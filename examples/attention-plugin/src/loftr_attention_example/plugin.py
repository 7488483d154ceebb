"""The module the ``loftr_attention.backends`` entry point names: it implements the hook."""

from __future__ import annotations

from loftr_attention import BackendSpec, hookimpl
from loftr_attention_example.key_blocked_attention import KeyBlockedAttention


@hookimpl
def loftr_attention_backends() -> list[BackendSpec]:
    """Register ``key_blocked`` with loftr-attention."""
    return [
        BackendSpec(
            "key_blocked",
            KeyBlockedAttention,
            "Example plugin: exact softmax attention with an online softmax over key blocks.",
        )
    ]
