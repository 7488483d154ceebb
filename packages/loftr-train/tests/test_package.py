"""Package metadata and public names."""

from importlib.metadata import version

import loftr_train


def test_version_matches_metadata() -> None:
    assert loftr_train.__version__ == version("loftr-train")


def test_public_names_import() -> None:
    for name in loftr_train.__all__:
        assert hasattr(loftr_train, name), name
