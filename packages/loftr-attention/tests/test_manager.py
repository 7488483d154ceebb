"""Plugin manager: built-ins, entry-point plugins (real dist-info on sys.path) and every error."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch

import loftr_attention
from loftr_attention import (
    DISABLE_AUTOLOAD_ENV,
    ENTRY_POINT_GROUP,
    BackendManager,
    BackendSpec,
    DuplicateBackendError,
    FullAttention,
    InvalidBackendSpecError,
    LinearAttention,
    PluginLoadError,
    UnknownBackendError,
    get_backend,
    hookimpl,
)
from loftr_attention.testing import run_conformance

BUILTINS = ["linear", "full", "flash", "memory_efficient", "sdpa"]


def install_fake_plugin(
    root: Path, monkeypatch: pytest.MonkeyPatch, dist: str, module: str, source: str
) -> None:
    """Put a distribution ``dist`` 0.3 whose entry point loads ``module`` on sys.path."""
    info = root / f"{dist.replace('-', '_')}-0.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{module}_ep = {module}\n")
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.delenv(DISABLE_AUTOLOAD_ENV, raising=False)


GOOD_PLUGIN = """
    from loftr_attention import BackendSpec, FullAttention, hookimpl

    class DoubleFull(FullAttention):
        pass

    @hookimpl
    def loftr_attention_backends():
        return [BackendSpec("{name}", DoubleFull, "test plugin")]
"""


def test_builtins_listed_in_order_and_new_instance_per_call() -> None:
    manager = BackendManager(autoload=False)
    assert manager.available() == BUILTINS
    first, second = manager.get_backend("linear"), manager.get_backend("linear")
    assert isinstance(first, LinearAttention) and first is not second
    assert list(first.parameters()) == []
    assert manager.get_spec("full").plugin == "loftr-attention (built-in)"


def test_module_level_api_uses_the_default_manager() -> None:
    assert set(BUILTINS) <= set(loftr_attention.available_backends())
    assert isinstance(get_backend("full", dropout=0.25), FullAttention)
    assert get_backend("full", dropout=0.25).dropout == 0.25


def test_unknown_name_lists_available_and_suggests() -> None:
    manager = BackendManager(autoload=False)
    with pytest.raises(UnknownBackendError) as info:
        manager.get_backend("memory_eficient")
    message = str(info.value)
    assert "'memory_eficient'" in message
    assert "Did you mean 'memory_efficient'?" in message
    assert "Available: linear, full, flash, memory_efficient, sdpa" in message
    assert ENTRY_POINT_GROUP in message
    assert isinstance(info.value, LookupError)
    with pytest.raises(UnknownBackendError, match=r"Did you mean 'flash'\?"):
        manager.get_backend("Flash")
    with pytest.raises(UnknownBackendError) as far:
        manager.get_backend("xyz")
    assert "Did you mean" not in str(far.value)


def test_entry_point_plugin_is_discovered_and_conforms(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake_plugin(
        tmp_path, monkeypatch, "fake-good", "fake_good_plugin", GOOD_PLUGIN.format(name="doubled")
    )
    manager = BackendManager()
    assert manager.available() == [*BUILTINS, "doubled"]
    spec = manager.get_spec("doubled")
    assert "fake_good_plugin_ep = fake_good_plugin" in spec.plugin
    assert "fake-good 0.3" in spec.plugin
    assert len(run_conformance("doubled", manager=manager, dtypes=(torch.float32,)).passed) == 6


def test_env_var_disables_autoload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_plugin(
        tmp_path, monkeypatch, "fake-env", "fake_env_plugin", GOOD_PLUGIN.format(name="envy")
    )
    monkeypatch.setenv(DISABLE_AUTOLOAD_ENV, "1")
    manager = BackendManager()
    assert manager.available() == BUILTINS
    with pytest.raises(UnknownBackendError, match=f"{DISABLE_AUTOLOAD_ENV} is set"):
        manager.get_backend("envy")
    monkeypatch.setenv(DISABLE_AUTOLOAD_ENV, "0")
    assert "envy" in BackendManager().available()


def test_plugin_import_failure_names_entry_point_and_distribution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake_plugin(
        tmp_path, monkeypatch, "fake-broken", "fake_broken_plugin", "import no_such_module_xyz\n"
    )
    with pytest.raises(PluginLoadError) as info:
        BackendManager().available()
    message = str(info.value)
    assert "fake_broken_plugin_ep = fake_broken_plugin" in message
    assert "'fake-broken 0.3'" in message
    assert "no_such_module_xyz" in message and DISABLE_AUTOLOAD_ENV in message
    assert isinstance(info.value, ImportError)
    # Disabling autoload is the documented way out.
    assert BackendManager(autoload=False).available() == BUILTINS


def test_plugin_with_an_invalid_hook_names_its_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = """
        from loftr_attention import hookimpl

        @hookimpl
        def loftr_attention_backends(unexpected_argument):
            return []
    """
    install_fake_plugin(tmp_path, monkeypatch, "fake-badhook", "fake_badhook", source)
    with pytest.raises(PluginLoadError) as info:
        BackendManager().available()
    message = str(info.value)
    assert "could not register" in message and "'fake-badhook 0.3'" in message
    assert "unexpected_argument" in message


def test_two_plugins_claiming_one_name_are_both_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake_plugin(
        tmp_path / "a", monkeypatch, "fake-dup-a", "fake_dup_a", GOOD_PLUGIN.format(name="dup")
    )
    install_fake_plugin(
        tmp_path / "b", monkeypatch, "fake-dup-b", "fake_dup_b", GOOD_PLUGIN.format(name="dup")
    )
    with pytest.raises(DuplicateBackendError) as info:
        BackendManager().available()
    message = str(info.value)
    assert "'dup'" in message and "fake-dup-a 0.3" in message and "fake-dup-b 0.3" in message


def test_plugin_cannot_shadow_a_builtin() -> None:
    class Shadow:
        @hookimpl
        def loftr_attention_backends(self) -> list[BackendSpec]:
            return [BackendSpec("linear", FullAttention)]

    manager = BackendManager(autoload=False)
    manager.register(Shadow(), "shadow")
    with pytest.raises(DuplicateBackendError, match=r"built-in.*plugin 'shadow'"):
        manager.available()
    manager.unregister("shadow")
    assert manager.available() == BUILTINS


def test_hook_returning_garbage_or_raising_is_named() -> None:
    class Garbage:
        @hookimpl
        def loftr_attention_backends(self) -> object:
            return ["full"]

    class Raises:
        @hookimpl
        def loftr_attention_backends(self) -> object:
            raise RuntimeError("boom")

    manager = BackendManager(autoload=False)
    manager.register(Garbage(), "garbage")
    with pytest.raises(InvalidBackendSpecError, match=r"plugin 'garbage'.*list of"):
        manager.available()
    manager.unregister("garbage")
    manager.register(Raises(), "raises")
    with pytest.raises(PluginLoadError, match="plugin 'raises' raised RuntimeError: boom"):
        manager.available()


@pytest.mark.parametrize("name", ["", "Linear", "1x", "has space"])
def test_invalid_spec_names_rejected(name: str) -> None:
    with pytest.raises(InvalidBackendSpecError, match="name"):
        BackendSpec(name, FullAttention)


def test_spec_backend_must_be_attention_backend() -> None:
    with pytest.raises(
        InvalidBackendSpecError, match=r"subclass of loftr_attention\.AttentionBackend"
    ):
        BackendSpec("x", torch.nn.Identity)  # type: ignore[arg-type]
