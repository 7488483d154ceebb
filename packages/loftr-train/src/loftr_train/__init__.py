"""loftr-train: Supervision, losses, metrics, the DDP trainer and evaluation for LoFTR."""

__version__ = "0.1.0"

__all__ = ["__version__"]
