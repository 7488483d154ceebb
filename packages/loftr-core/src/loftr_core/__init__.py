"""loftr-core: The LoFTR matcher: model, official checkpoint loading, a matching API and the loftr-match command."""

__version__ = "0.1.0"

__all__ = ["__version__"]
