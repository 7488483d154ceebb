"""loftr-attention: interchangeable attention backends for LoFTR, as pluggy plugins.

>>> from loftr_attention import get_backend
>>> attn = get_backend("linear")           # LoFTR's linear attention (official checkpoints)
>>> out = attn(q, k, v, q_mask=None, kv_mask=None)  # doctest: +SKIP
"""

from loftr_attention.backend import AttentionBackend
from loftr_attention.errors import (
    AttentionInputError,
    BackendOptionError,
    DuplicateBackendError,
    InvalidBackendSpecError,
    LoftrAttentionError,
    PluginLoadError,
    UnknownBackendError,
    UnsupportedInputError,
)
from loftr_attention.hookspecs import hookimpl
from loftr_attention.linear_attention import LinearAttention
from loftr_attention.manager import (
    DISABLE_AUTOLOAD_ENV,
    ENTRY_POINT_GROUP,
    BackendManager,
    available_backends,
    default_manager,
    get_backend,
    get_spec,
)
from loftr_attention.sdpa_attention import FlashAttention, MemoryEfficientAttention, SDPAttention
from loftr_attention.softmax_attention import FullAttention
from loftr_attention.spec import BackendSpec, DeviceSupport

__version__ = "0.1.0"

__all__ = [
    "DISABLE_AUTOLOAD_ENV",
    "ENTRY_POINT_GROUP",
    "AttentionBackend",
    "AttentionInputError",
    "BackendManager",
    "BackendOptionError",
    "BackendSpec",
    "DeviceSupport",
    "DuplicateBackendError",
    "FlashAttention",
    "FullAttention",
    "InvalidBackendSpecError",
    "LinearAttention",
    "LoftrAttentionError",
    "MemoryEfficientAttention",
    "PluginLoadError",
    "SDPAttention",
    "UnknownBackendError",
    "UnsupportedInputError",
    "__version__",
    "available_backends",
    "default_manager",
    "get_backend",
    "get_spec",
    "hookimpl",
]
