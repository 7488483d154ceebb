"""loftr-data: MegaDepth and synthetic homography datasets and the scene-balanced distributed sampler for LoFTR."""

__version__ = "0.1.0"

__all__ = ["__version__"]
