"""Checkpoint layouts (official Lightning, kornia, native), safety, DS/OT detection, key checks.

The "official" files are written here the way PyTorch-Lightning 1.3 wrote them: the
``matcher.``-prefixed state dict plus epoch/global_step/optimizer/scheduler fields and a
callbacks dict keyed by a Lightning class (pickled by reference), so loading must work without
Lightning installed and without running any of the file's code.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from loftr_core.api.checkpoint import (
    check_state_dict,
    convert_checkpoint,
    load_model,
    read_checkpoint,
    read_state_dict,
    save_native,
)
from loftr_core.api.matcher import Matcher
from loftr_core.errors import CheckpointError
from loftr_core.model import LoFTR
from loftr_core.model.config import LoFTRConfig


@pytest.fixture(scope="module")
def ds_model() -> LoFTR:
    torch.manual_seed(1)
    return LoFTR(LoFTRConfig.outdoor_ds())


@pytest.fixture(scope="module")
def ot_model() -> LoFTR:
    torch.manual_seed(2)
    return LoFTR(LoFTRConfig.outdoor_ot())


@pytest.fixture
def fake_lightning(monkeypatch: pytest.MonkeyPatch) -> Iterator[type]:
    """A stand-in ``pytorch_lightning...ModelCheckpoint`` importable only while writing."""
    name = "pytorch_lightning.callbacks.model_checkpoint"
    mod = types.ModuleType(name)
    cls = type("ModelCheckpoint", (), {"__module__": name})
    mod.ModelCheckpoint = cls  # type: ignore[attr-defined]
    for parent in ("pytorch_lightning", "pytorch_lightning.callbacks"):
        monkeypatch.setitem(sys.modules, parent, types.ModuleType(parent))
    monkeypatch.setitem(sys.modules, name, mod)
    yield cls


def write_official(model: torch.nn.Module, path: Path, callback_cls: type) -> Path:
    """Write ``model`` in the official Lightning layout, then make its classes unimportable."""
    sd = {f"matcher.{k}": v.clone() for k, v in model.state_dict().items()}
    first = next(iter(sd.values()))
    ckpt = {
        "epoch": 29,
        "global_step": 123456,
        "pytorch-lightning_version": "1.3.5",
        "state_dict": sd,
        "callbacks": {callback_cls: {"monitor": "auc@10", "best_model_score": torch.tensor(0.69)}},
        "optimizer_states": [
            {"state": {0: {"exp_avg": torch.zeros_like(first)}}, "param_groups": [{"lr": 8e-3}]}
        ],
        "lr_schedulers": [{"milestones": {8: 1, 12: 1}, "gamma": 0.5, "last_epoch": 29}],
    }
    torch.save(ckpt, path)
    return path


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_official_lightning_layout(
    ds_model: LoFTR, tmp_path: Path, fake_lightning: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_official(ds_model, tmp_path / "outdoor_ds.ckpt", fake_lightning)
    monkeypatch.delitem(sys.modules, "pytorch_lightning.callbacks.model_checkpoint")
    monkeypatch.delitem(sys.modules, "pytorch_lightning")
    sd, layout = read_state_dict(path)
    assert layout == "lightning"
    assert len(sd) == 211 and "backbone.conv1.weight" in sd
    assert not any(k.startswith("matcher.") for k in sd)
    loaded = load_model(path, "outdoor_ds")
    assert_same_weights(loaded, ds_model)
    assert not loaded.training
    assert loaded.config == LoFTRConfig.outdoor_ds()


def test_kornia_layouts(ds_model: LoFTR, tmp_path: Path) -> None:
    flat = tmp_path / "flat.pth"
    torch.save(ds_model.state_dict(), flat)
    wrapped = tmp_path / "loftr_outdoor.ckpt"
    torch.save({"state_dict": ds_model.state_dict()}, wrapped)
    for path in (flat, wrapped):
        sd, layout = read_state_dict(path)
        assert layout == "kornia" and len(sd) == 211
        assert_same_weights(load_model(path, "outdoor_ds"), ds_model)


def test_native_roundtrip_rebuilds_its_own_model(tmp_path: Path) -> None:
    # a non-preset architecture proves the config travels with the weights
    torch.manual_seed(3)
    config = LoFTRConfig.indoor_ds_new().replace(
        resnetfpn={"initial_dim": 16, "block_dims": (16, 24, 32)},
        coarse={"d_model": 32, "nhead": 4, "layer_names": ("self", "cross")},
        fine={"d_model": 16, "nhead": 2},
    )
    model = LoFTR(config)
    path = save_native(model, tmp_path / "w" / "tiny.safetensors")
    ckpt = read_checkpoint(path)
    assert ckpt.layout == "native" and ckpt.config == config
    loaded = load_model(path)
    assert loaded.config == config
    assert_same_weights(loaded, model)
    assert loaded.state_dict()["backbone.bn1.num_batches_tracked"].dtype == torch.int64


def test_converter_writes_native_from_official(
    ot_model: LoFTR, tmp_path: Path, fake_lightning: type
) -> None:
    src = write_official(ot_model, tmp_path / "outdoor_ot.ckpt", fake_lightning)
    out = convert_checkpoint(src, tmp_path / "outdoor_ot.safetensors", "outdoor_ot")
    ckpt = read_checkpoint(out)
    assert ckpt.layout == "native" and ckpt.config == LoFTRConfig.outdoor_ot()
    assert ckpt.match_type == "sinkhorn" and len(ckpt.state_dict) == 212
    assert_same_weights(load_model(out), ot_model)


def test_ds_ot_detected_and_mismatched_preset_refused(
    ds_model: LoFTR, ot_model: LoFTR, tmp_path: Path
) -> None:
    ot_path, ds_path = tmp_path / "a.pth", tmp_path / "b.pth"
    torch.save(ot_model.state_dict(), ot_path)
    torch.save(ds_model.state_dict(), ds_path)
    assert read_checkpoint(ot_path).match_type == "sinkhorn"
    assert read_checkpoint(ds_path).match_type == "dual_softmax"
    with pytest.raises(CheckpointError, match=r"optimal-transport \(OT\).*outdoor_ot"):
        load_model(ot_path, "outdoor_ds")
    with pytest.raises(CheckpointError, match=r"dual-softmax \(DS\).*indoor_ds"):
        load_model(ds_path, "indoor_ot")
    # no preset: inferred from the kind
    assert load_model(ot_path).config.match_coarse.match_type == "sinkhorn"


def test_preset_inferred_from_official_file_name(ds_model: LoFTR, tmp_path: Path) -> None:
    path = tmp_path / "indoor_ds_new.ckpt"
    torch.save({"state_dict": ds_model.state_dict()}, path)
    assert load_model(path).config == LoFTRConfig.indoor_ds_new()


def test_missing_unexpected_and_wrong_shape_are_named(ds_model: LoFTR, tmp_path: Path) -> None:
    sd = dict(ds_model.state_dict())
    del sd["loftr_fine.layers.1.norm2.bias"]
    sd["extra.weight"] = torch.zeros(3)
    sd["backbone.conv1.weight"] = torch.zeros(64, 1, 7, 7)
    path = tmp_path / "broken.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as info:
        load_model(path, "outdoor_ds")
    msg = str(info.value)
    assert "1 missing key(s): loftr_fine.layers.1.norm2.bias" in msg
    assert "1 unexpected key(s): extra.weight" in msg
    assert "backbone.conv1.weight: checkpoint [64, 1, 7, 7] vs model [128, 1, 7, 7]" in msg
    check_state_dict(ds_model.state_dict(), ds_model.state_dict())  # exact fit: no error


def test_pickled_code_is_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[object, ...]]:
            return (Path.touch, (marker,))

    whole = tmp_path / "model.pt"
    torch.save(Payload(), whole)
    with pytest.raises(CheckpointError, match=r"refused|does not hold a state dict"):
        read_checkpoint(whole)
    inside = tmp_path / "sd.pt"
    torch.save({"state_dict": {"backbone.conv1.weight": Payload()}}, inside)
    with pytest.raises(CheckpointError, match=r"refused|non-tensor values"):
        read_checkpoint(inside)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "empty"),
        (b"just some text, not weights\n", "not a PyTorch checkpoint"),
        (b"\xff\xd8\xff\xe0 a jpeg header", "not a PyTorch checkpoint"),
        (b"PK\x03\x04 broken zip", "not a PyTorch checkpoint"),
        (b"\x10\x00\x00\x00\x00\x00\x00\x00{ broken", "safetensors"),
    ],
)
def test_not_a_checkpoint(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "weights.ckpt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        read_checkpoint(path)


def test_missing_path_mentions_official_weights(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"does not exist.*zju3dv/LoFTR"):
        read_checkpoint(tmp_path / "outdoor_ds.ckpt")
    with pytest.raises(CheckpointError, match="not a file"):
        read_checkpoint(tmp_path)


def test_matcher_from_checkpoint_lowers_thr(tmp_path: Path) -> None:
    torch.manual_seed(4)
    config = LoFTRConfig.outdoor_ds().replace(
        resnetfpn={"initial_dim": 16, "block_dims": (16, 24, 32)},
        coarse={"d_model": 32, "nhead": 4, "layer_names": ("self", "cross")},
        fine={"d_model": 16, "nhead": 2},
    )
    path = save_native(LoFTR(config), tmp_path / "t.safetensors")
    matcher = Matcher.from_checkpoint(path, threshold=0.0, attention="full")
    assert matcher.threshold == 0.0  # applied by the model's coarse matching, call by call
    assert matcher.model.config.match_coarse.thr == 0.2  # the stored config is untouched
    assert matcher.model.config.coarse.attention == "full"
    img = torch.rand(64, 80)
    assert len(matcher.match(img, img)) > len(Matcher.from_checkpoint(path).match(img, img))


def test_kornia_model_state_dict_loads(tmp_path: Path) -> None:
    kornia_feature = pytest.importorskip("kornia.feature")
    torch.manual_seed(5)
    theirs = kornia_feature.LoFTR(pretrained=None)
    path = tmp_path / "kornia_loftr.pth"
    torch.save({"state_dict": theirs.state_dict()}, path)
    sd, layout = read_state_dict(path)
    assert layout == "kornia" and len(sd) == 211
    ours = load_model(path, "outdoor_ds")
    for key, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key
