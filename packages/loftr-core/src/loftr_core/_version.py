"""The version of loftr-core (read by the build backend; written nowhere else)."""

__version__ = "0.1.0"
