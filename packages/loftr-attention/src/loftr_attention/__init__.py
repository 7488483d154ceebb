"""loftr-attention: Interchangeable attention backends for LoFTR (linear, full, flash, memory-efficient, sdpa) as pluggy plugins."""

__version__ = "0.1.0"

__all__ = ["__version__"]
