"""The command layer: every command goes through :mod:`loftr_core.cli.runner` (shared options,
one error policy); ``loftr-match`` is :mod:`~loftr_core.cli.match`, ``loftr-convert``
:mod:`~loftr_core.cli.convert`."""
