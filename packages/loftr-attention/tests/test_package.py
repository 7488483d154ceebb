"""Package metadata and public names."""

from importlib.metadata import version

import loftr_attention


def test_version_matches_metadata() -> None:
    assert loftr_attention.__version__ == version("loftr-attention")


def test_public_names_import() -> None:
    for name in loftr_attention.__all__:
        assert hasattr(loftr_attention, name), name
