"""The pluggy hook specification third-party attention plugins implement.

A plugin is a module (or object) with a function marked ``@loftr_attention.hookimpl`` named
``loftr_attention_backends`` returning a list of :class:`~loftr_attention.BackendSpec`; it is
found through the ``loftr_attention.backends`` entry-point group (see the package README).
"""

from __future__ import annotations

import pluggy

from loftr_attention.spec import BackendSpec

__all__ = ["PROJECT_NAME", "hookimpl", "hookspec", "loftr_attention_backends"]

#: The pluggy project name shared by the hook specification and implementations.
PROJECT_NAME = "loftr_attention"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
#: Decorator for plugin hook implementations: ``@hookimpl def loftr_attention_backends(): ...``.
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def loftr_attention_backends() -> list[BackendSpec]:  # type: ignore[empty-body]
    """Return the attention backends this plugin provides.

    Returns:
        A list of :class:`~loftr_attention.BackendSpec`, each with a name no other plugin uses.
    """
