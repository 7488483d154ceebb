"""Example third-party attention backend for loftr-attention (``key_blocked``)."""

from loftr_attention_example.key_blocked_attention import KeyBlockedAttention

__version__ = "0.1.0"

__all__ = ["KeyBlockedAttention", "__version__"]
