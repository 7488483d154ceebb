"""Package metadata and public names."""

from importlib.metadata import version

import loftr_core


def test_version_matches_metadata() -> None:
    assert loftr_core.__version__ == version("loftr-core")


def test_public_names_import() -> None:
    for name in loftr_core.__all__:
        assert hasattr(loftr_core, name), name
