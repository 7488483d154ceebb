"""The plugin manager: built-in backends plus third-party plugins found through entry points.

Third-party plugins are discovered lazily (on the first lookup, never at import) from the
entry-point group :data:`ENTRY_POINT_GROUP`. Setting the environment variable
:data:`DISABLE_AUTOLOAD_ENV` (to anything but ``""``/``0``/``false``/``no``) disables that
autoloading, as ``PYTEST_DISABLE_PLUGIN_AUTOLOAD`` does for pytest; plugins can still be
registered explicitly with :meth:`BackendManager.register`.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import threading
from importlib import metadata
from typing import Any

import pluggy

from loftr_attention import builtin_backends, hookspecs
from loftr_attention.backend import AttentionBackend
from loftr_attention.errors import (
    DuplicateBackendError,
    InvalidBackendSpecError,
    PluginLoadError,
    UnknownBackendError,
)
from loftr_attention.spec import BackendSpec

__all__ = [
    "DISABLE_AUTOLOAD_ENV",
    "ENTRY_POINT_GROUP",
    "BackendManager",
    "available_backends",
    "default_manager",
    "get_backend",
    "get_spec",
]

logger = logging.getLogger(__name__)

#: Entry-point group third-party plugins register under, e.g. in pyproject.toml:
#: ``[project.entry-points."loftr_attention.backends"] my_attention = "my_pkg.plugin"``.
ENTRY_POINT_GROUP = "loftr_attention.backends"
#: Environment variable that disables autoloading of third-party plugins when set.
DISABLE_AUTOLOAD_ENV = "LOFTR_ATTENTION_DISABLE_PLUGIN_AUTOLOAD"
_BUILTIN = "builtin"
_FALSY = {"", "0", "false", "no", "off"}


def autoload_disabled() -> bool:
    """Whether :data:`DISABLE_AUTOLOAD_ENV` currently disables plugin autoloading."""
    return os.environ.get(DISABLE_AUTOLOAD_ENV, "").strip().lower() not in _FALSY


class BackendManager:
    """Registry of attention backends: the built-ins plus pluggy plugins.

    Args:
        autoload: Load third-party plugins from :data:`ENTRY_POINT_GROUP` on first lookup.
            ``None`` (default): yes, unless :data:`DISABLE_AUTOLOAD_ENV` is set at that moment.
    """

    def __init__(self, *, autoload: bool | None = None) -> None:
        self._pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self._pm.add_hookspecs(hookspecs)
        self._pm.register(builtin_backends, name=_BUILTIN)
        self._origins: dict[str, str] = {_BUILTIN: "loftr-attention (built-in)"}
        self._autoload = autoload
        self._autoloaded = False
        self._specs: dict[str, BackendSpec] | None = None
        self._lock = threading.RLock()

    # -- registration ---------------------------------------------------------------------
    def register(self, plugin: object, name: str, origin: str | None = None) -> None:
        """Register a plugin object (a module or any object with the hook implementation).

        Args:
            plugin: Object with a ``@hookimpl``-marked ``loftr_attention_backends`` function.
            name: Unique plugin name.
            origin: How to describe the plugin in error messages (defaults to ``plugin 'name'``).
        """
        with self._lock:
            self._pm.register(plugin, name=name)
            self._origins[name] = origin or f"plugin {name!r}"
            self._specs = None

    def unregister(self, name: str) -> None:
        """Remove the plugin registered under ``name`` (no-op when absent)."""
        with self._lock:
            if self._pm.get_plugin(name) is not None:
                self._pm.unregister(name=name)
            self._origins.pop(name, None)
            self._specs = None

    def autoload_enabled(self) -> bool:
        """Whether third-party plugins are (or will be) loaded from entry points."""
        return (not autoload_disabled()) if self._autoload is None else self._autoload

    def _load_entry_points(self) -> None:
        if self._autoloaded or not self.autoload_enabled():
            return
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            plugin_name = f"{ENTRY_POINT_GROUP}:{ep.name}"
            if self._pm.get_plugin(plugin_name) is not None:
                continue
            dist = ep.dist
            dist_text = f"{dist.metadata['Name']} {dist.version}" if dist is not None else "unknown"
            origin = f"entry point '{ep.name} = {ep.value}' of distribution '{dist_text}'"
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginLoadError(
                    f"failed to load attention plugin from {origin} (group "
                    f"{ENTRY_POINT_GROUP!r}): {type(exc).__name__}: {exc}. Fix or uninstall that "
                    f"distribution, or set {DISABLE_AUTOLOAD_ENV}=1 to skip third-party plugins."
                ) from exc
            try:
                self.register(plugin, plugin_name, origin)
            except Exception as exc:  # pluggy.PluginValidationError, double registration
                raise PluginLoadError(
                    f"could not register the attention plugin from {origin}: "
                    f"{type(exc).__name__}: {exc}. Its hook must be "
                    "`@loftr_attention.hookimpl def loftr_attention_backends() -> list[BackendSpec]`."
                ) from exc
            logger.debug("loaded attention plugin %s", origin)
        self._autoloaded = True

    # -- lookup ---------------------------------------------------------------------------
    def specs(self) -> dict[str, BackendSpec]:
        """All backends by name (built-ins first), loading plugins on first use.

        Raises:
            PluginLoadError: A plugin failed to import or its hook raised.
            InvalidBackendSpecError: A hook returned something other than BackendSpecs.
            DuplicateBackendError: Two plugins claim one name (both are named).
        """
        with self._lock:
            if self._specs is not None:
                return self._specs
            self._load_entry_points()
            specs: dict[str, BackendSpec] = {}
            impls = self._pm.hook.loftr_attention_backends.get_hookimpls()
            # get_hookimpls() lists implementations in registration order: built-ins first.
            for impl in impls:
                origin = self._origins.get(impl.plugin_name, f"plugin {impl.plugin_name!r}")
                for spec in self._call(impl, origin):
                    if spec.name in specs:
                        raise DuplicateBackendError(
                            f"attention backend name {spec.name!r} is claimed twice: by "
                            f"{specs[spec.name].plugin} and by {origin}. Uninstall one of them, "
                            f"or set {DISABLE_AUTOLOAD_ENV}=1 and register the one you want "
                            "explicitly."
                        )
                    specs[spec.name] = dataclasses.replace(spec, plugin=origin)
            self._specs = specs
            return specs

    @staticmethod
    def _call(impl: pluggy.HookImpl, origin: str) -> list[BackendSpec]:
        try:
            result = impl.function()
        except Exception as exc:
            raise PluginLoadError(
                f"the loftr_attention_backends hook of {origin} raised {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(result, (list, tuple)) or not all(
            isinstance(spec, BackendSpec) for spec in result
        ):
            raise InvalidBackendSpecError(
                f"the loftr_attention_backends hook of {origin} returned {result!r}; it must "
                "return a list of loftr_attention.BackendSpec"
            )
        return list(result)

    def available(self) -> list[str]:
        """Names of all available backends."""
        return list(self.specs())

    def get_spec(self, name: str) -> BackendSpec:
        """The spec registered under ``name``.

        Raises:
            UnknownBackendError: No such backend; the message lists the available names.
        """
        specs = self.specs()
        spec = specs.get(name)
        if spec is not None:
            return spec
        names = list(specs)
        close = difflib.get_close_matches(str(name).lower(), names, n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        plugins = (
            f"Third-party backends come from packages registering the {ENTRY_POINT_GROUP!r} "
            "entry point (see the loftr-attention README)"
        )
        if not self.autoload_enabled():
            plugins += f"; autoloading them is disabled ({DISABLE_AUTOLOAD_ENV} is set)"
        raise UnknownBackendError(
            f"unknown attention backend {name!r}.{hint} Available: {', '.join(names)}. {plugins}."
        )

    def get_backend(self, name: str, **options: Any) -> AttentionBackend:
        """A NEW backend module for ``name``, built with ``options`` (e.g. ``dropout=0.1``)."""
        return self.get_spec(name).create(**options)


_default: BackendManager | None = None
_default_lock = threading.Lock()


def default_manager() -> BackendManager:
    """The process-wide manager used by :func:`get_backend` (created on first use)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = BackendManager()
        return _default


def get_backend(name: str, **options: Any) -> AttentionBackend:
    """Build a new attention backend module by name.

    Args:
        name: ``"linear"``, ``"full"``, ``"flash"``, ``"memory_efficient"``, ``"sdpa"`` or a name
            registered by a plugin.
        **options: Passed to the backend's constructor (e.g. ``dropout`` for softmax backends).

    Returns:
        A new :class:`~loftr_attention.AttentionBackend` (an ``nn.Module`` without parameters).

    Raises:
        UnknownBackendError: Unknown name; the message lists the available ones.
    """
    return default_manager().get_backend(name, **options)


def get_spec(name: str) -> BackendSpec:
    """The :class:`~loftr_attention.BackendSpec` registered under ``name``."""
    return default_manager().get_spec(name)


def available_backends() -> dict[str, BackendSpec]:
    """All backends by name (``list(available_backends())`` gives the names)."""
    return dict(default_manager().specs())
