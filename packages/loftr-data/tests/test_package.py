"""Package metadata and public names."""

from importlib.metadata import version

import loftr_data


def test_version_matches_metadata() -> None:
    assert loftr_data.__version__ == version("loftr-data")


def test_public_names_import() -> None:
    for name in loftr_data.__all__:
        assert hasattr(loftr_data, name), name
