"""Shared pytest fixtures for every package's tests.

Real data lives outside the repository, in ``../shared/data`` (see its README). Tests reach it only
through the ``shared_data`` fixture; set ``LOFTR_SHARED_DATA`` to point elsewhere. When it is
absent the tests that need it skip with a clear reason; ``.ci/run`` checks it exists, so in CI
nothing real is skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
DEFAULT_SHARED_DATA = ROOT.parent / "shared" / "data"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``gpu``-marked tests when no CUDA device is present."""
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (none available)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the real test data (``../shared/data`` or ``$LOFTR_SHARED_DATA``)."""
    path = Path(os.environ.get("LOFTR_SHARED_DATA", DEFAULT_SHARED_DATA))
    if not (path / "README.md").is_file():
        pytest.skip(f"real data not found at {path}; set LOFTR_SHARED_DATA to ../shared/data")
    return path
