"""LoFTRConfig: validation, (de)serialisation and the official presets."""

from __future__ import annotations

import json

import pytest

from loftr_core.errors import ConfigError, LoftrError
from loftr_core.model.config import (
    PRESETS,
    BackboneConfig,
    CoarseConfig,
    FineConfig,
    LoFTRConfig,
    MatchCoarseConfig,
)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_round_trips_through_json(name: str) -> None:
    cfg = PRESETS[name]()
    again = LoFTRConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


def test_presets_match_the_checkpoint_table() -> None:
    # spec §3.4: (match_type, temp_bug_fix, border_rm) per checkpoint
    expected = {
        "outdoor_ds": ("dual_softmax", False, 2, 0.3),
        "outdoor_ot": ("sinkhorn", False, 2, 0.3),
        "indoor_ds": ("dual_softmax", False, 0, 0.2),
        "indoor_ds_new": ("dual_softmax", True, 0, 0.2),
        "indoor_ot": ("sinkhorn", False, 2, 0.2),
    }
    for name, (mtype, bugfix, border, pct) in expected.items():
        cfg = PRESETS[name]()
        got = (
            cfg.match_coarse.match_type,
            cfg.coarse.temp_bug_fix,
            cfg.match_coarse.border_rm,
            cfg.match_coarse.train_coarse_percent,
        )
        assert got == (mtype, bugfix, border, pct), name
        assert cfg.match_coarse.thr == 0.2
        assert cfg.match_coarse.skh_iters == 3
        assert cfg.coarse.layer_names == ("self", "cross") * 4
        assert cfg.fine.layer_names == ("self", "cross")
        assert (cfg.coarse.d_model, cfg.fine.d_model, cfg.coarse.nhead) == (256, 128, 8)
        # design alternatives are off in every official preset
        assert cfg.resnetfpn.downsample == "conv1x1"
        assert cfg.coarse.pos_encoding == "sine"
        assert not cfg.coarse.norm_first and not cfg.fine.norm_first
        assert cfg.coarse.message_fusion == cfg.fine.message_fusion == "concat"


def test_modern_preset_turns_every_alternative_on() -> None:
    cfg = LoFTRConfig.modern()
    assert cfg.resnetfpn.downsample == "conv3x3"
    assert cfg.coarse.pos_encoding == "detr"
    assert cfg.coarse.norm_first and cfg.fine.norm_first
    assert cfg.coarse.message_fusion == cfg.fine.message_fusion == "add"


def test_presets_are_fresh_objects_and_frozen() -> None:
    a, b = LoFTRConfig.outdoor_ds(), LoFTRConfig.outdoor_ds()
    assert a == b
    with pytest.raises(AttributeError):
        a.match_coarse.thr = 0.5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("build", "field", "value"),
    [
        (lambda: MatchCoarseConfig(match_type="softmax"), "match_type", "softmax"),
        (lambda: MatchCoarseConfig(thr=1.5), "thr", "1.5"),
        (lambda: MatchCoarseConfig(thr=float("nan")), "thr", "nan"),
        (lambda: MatchCoarseConfig(border_rm=-1), "border_rm", "-1"),
        (lambda: MatchCoarseConfig(skh_iters=0), "skh_iters", "0"),
        (lambda: MatchCoarseConfig(skh_prefilter=1), "skh_prefilter", "1"),  # type: ignore[arg-type]
        (lambda: CoarseConfig(nhead=7), "nhead", "7"),
        (lambda: CoarseConfig(layer_names=("self", "crosss")), "layer_names", "crosss"),
        (lambda: CoarseConfig(temp_bug_fix="no"), "temp_bug_fix", "'no'"),  # type: ignore[arg-type]
        (lambda: CoarseConfig(pos_encoding="learned"), "pos_encoding", "learned"),
        (lambda: FineConfig(message_fusion="mul"), "message_fusion", "mul"),
        (lambda: BackboneConfig(downsample="pool"), "downsample", "pool"),
        (lambda: BackboneConfig(block_dims=(128, 196)), "block_dims", "(128, 196)"),
        (lambda: LoFTRConfig(resolution=(16, 4)), "resolution", "(16, 4)"),
        (lambda: LoFTRConfig(fine_window_size=4), "fine_window_size", "4"),
        (lambda: LoFTRConfig(coarse=CoarseConfig(d_model=128, nhead=8)), "d_model", "128"),
    ],
)
def test_invalid_values_name_field_value_and_allowed(build: object, field: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        build()  # type: ignore[operator]
    msg = str(info.value)
    assert field in msg and value in msg and "allowed" in msg
    assert isinstance(info.value, ValueError) and isinstance(info.value, LoftrError)


def test_from_dict_rejects_unknown_keys_and_lists_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['thresh'\].*'thr'"):
        LoFTRConfig.from_dict({"match_coarse": {"thresh": 0.1}})
    with pytest.raises(ConfigError, match=r"\['nonsense'\].*'match_coarse'"):
        LoFTRConfig.from_dict({"nonsense": 1})


def test_from_dict_accepts_the_original_upper_case_partial_config() -> None:
    # the kornia / original dict layout, upper case as in yacs; missing keys take defaults
    cfg = LoFTRConfig.from_dict(
        {
            "RESOLUTION": [8, 2],
            "COARSE": {"TEMP_BUG_FIX": False, "LAYER_NAMES": ["self", "cross"] * 4},
            "MATCH_COARSE": {"THR": 0.25, "MATCH_TYPE": "sinkhorn"},
        }
    )
    assert cfg.coarse.temp_bug_fix is False
    assert cfg.match_coarse.thr == 0.25
    assert cfg.match_coarse.match_type == "sinkhorn"
    assert cfg.fine == FineConfig()


def test_replace_merges_section_changes() -> None:
    cfg = LoFTRConfig.outdoor_ds().replace(match_coarse={"thr": 0.05})
    assert cfg.match_coarse.thr == 0.05
    assert cfg.match_coarse.border_rm == 2  # untouched fields keep the preset's value
    assert cfg.coarse.temp_bug_fix is False
    with pytest.raises(ConfigError, match="valid keys"):
        cfg.replace(match_coarse={"threshold": 0.1})
    with pytest.raises(ConfigError):
        cfg.replace(match_coarse={"thr": -0.1})


def test_legacy_execution_keys_in_stored_configs_are_accepted_and_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Checkpoints written before the model/execution split hold speed options and d_ffn."""
    old = LoFTRConfig.outdoor_ds().to_dict()
    old["resnetfpn"].update(channels_last="auto", fold_batchnorm=True, fine_branch_dtype="float32")
    old["coarse"].update(d_ffn=256, compute_dtype="inherit", onednn_linear=True)
    old["fine"].update(d_ffn=128, compute_dtype="bfloat16", onednn_linear=False)
    old["match_coarse"].update(
        max_chunk_elements=1 << 25, cuda_max_chunk_elements=1, onednn_matmul=True
    )
    with caplog.at_level("DEBUG", logger="loftr_core.model.config"):
        assert LoFTRConfig.from_dict(old) == LoFTRConfig.outdoor_ds()
    assert "onednn_linear" in caplog.text and "not part of the model" in caplog.text
    with pytest.raises(ConfigError, match="channels_last"):  # only in stored dicts, not as fields
        LoFTRConfig.outdoor_ds().replace(resnetfpn={"channels_last": False})
