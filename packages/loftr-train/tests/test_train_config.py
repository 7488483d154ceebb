"""The training configuration: YAML + overrides, typed validation, shipped configs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from loftr_core.errors import ConfigError
from loftr_train.presets import list_presets, model_preset
from loftr_train.train_config import (
    ModelConfig,
    TrainConfig,
    apply_overrides,
    builtin_configs,
    load_config,
)


def test_shipped_configs_load_and_roundtrip() -> None:
    assert {"megadepth_outdoor_ds", "synthetic_homography"} <= set(builtin_configs())
    for name in builtin_configs():
        cfg = load_config(name)
        again = TrainConfig.from_dict(yaml.safe_load(cfg.to_yaml()))
        assert again == cfg


def test_outdoor_config_is_the_original_recipe() -> None:
    cfg = load_config("megadepth_outdoor_ds")
    assert cfg.optim.optimizer == "adamw"
    assert cfg.optim.adamw_decay == 0.1
    assert cfg.optim.canonical_lr == 8e-3
    assert cfg.optim.canonical_bs == 64
    assert cfg.optim.gradient_clipping == 0.5
    assert cfg.schedule.warmup_step == 1875
    assert cfg.schedule.warmup_ratio == 0.1
    assert cfg.schedule.milestones == (8, 12, 16, 20, 24)
    assert cfg.schedule.gamma == 0.5
    model = cfg.model.build()
    assert model.match_coarse.match_type == "dual_softmax"
    assert model.match_coarse.train_coarse_percent == 0.3
    assert cfg.trainer.seed == 66 and cfg.sampler.n_samples_per_subset == 100


def test_overrides_are_dotted_and_yaml_parsed(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("optim: {canonical_lr: 0.004}\nschedule: {milestones: [1, 2]}\n")
    cfg = load_config(
        path,
        [
            "optim.canonical_lr=1e-3",
            "schedule.milestones=[3, 6, 9]",
            "model.options.match_coarse.thr=0.1",
            "trainer.max_steps=7",
            "trainer.precision=32",
            "data.root=null",
        ],
    )
    assert cfg.optim.canonical_lr == pytest.approx(1e-3)
    assert cfg.schedule.milestones == (3, 6, 9)
    assert cfg.model.build().match_coarse.thr == pytest.approx(0.1)
    assert cfg.trainer.max_steps == 7
    assert cfg.trainer.precision == "32"
    assert cfg.data.root is None


def test_apply_overrides_does_not_mutate_input() -> None:
    base = {"optim": {"canonical_lr": 1.0}}
    out = apply_overrides(base, ["optim.canonical_lr=2.0", "a.b.c=3"])
    assert base == {"optim": {"canonical_lr": 1.0}}
    assert out == {"optim": {"canonical_lr": 2.0}, "a": {"b": {"c": 3}}}


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("optim.lr=3", "valid keys are ['optimizer', 'canonical_lr'"),
        ("optimm.canonical_lr=3", "valid keys are ['model', 'data'"),
        ("model.options.match_coarse.foo=1", "'thr'"),
        ("trainer.precision=16", "['32', 'bf16', 'fp16']"),
        ("data.batch_size=two", "allowed is an integer"),
        ("data.batch_size=0", "> 0"),
        ("schedule.milestones=[5, 3]", "increasing"),
        ("nonsense", "dotted.key=value"),
    ],
)
def test_bad_keys_and_values_are_clear_errors(override: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config("synthetic_homography", [override])
    assert needle in str(info.value)
    assert isinstance(info.value, ValueError)


def test_unknown_config_name_lists_shipped() -> None:
    with pytest.raises(ConfigError, match="synthetic_homography"):
        load_config("no_such_config")


def test_cli_print_and_list_configs(capsys: pytest.CaptureFixture[str]) -> None:
    from loftr_train.cli_train import main

    assert main(["--list-configs"]) == 0
    assert "synthetic_homography" in capsys.readouterr().out.split()
    assert main(["synthetic_homography", "optim.canonical_lr=2e-3", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["optim"]["canonical_lr"] == pytest.approx(2e-3)
    assert TrainConfig.from_dict(printed) == load_config(
        "synthetic_homography", ["optim.canonical_lr=2e-3"]
    )


def test_cli_config_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    from loftr_train.cli_train import main

    assert main(["synthetic_homography", "optim.lr=1", "--print-config"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key(s) ['lr'] in section 'optim'" in err
    assert "canonical_lr" in err


def test_sections_are_frozen_and_changes_build_new_validated_objects() -> None:
    cfg = load_config("synthetic_homography")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.trainer.max_steps = 3  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.trainer = cfg.trainer  # type: ignore[misc]
    changed = cfg.replace(trainer={"max_steps": 3}, schedule={"milestones": [2, 5]})
    assert (changed.trainer.max_steps, changed.schedule.milestones) == (3, (2, 5))
    assert cfg.trainer.max_steps is None and cfg.schedule.milestones == (10, 14)
    assert changed.optim == cfg.optim
    same = cfg.with_overrides(["trainer.max_steps=3", "schedule.milestones=[2, 5]"])
    assert same == changed
    assert load_config("synthetic_homography", ["trainer.max_steps=3"]).trainer.max_steps == 3
    with pytest.raises(ConfigError, match="allowed is an increasing list"):
        cfg.replace(schedule={"milestones": [5, 2]})
    with pytest.raises(ConfigError, match="valid keys are"):
        cfg.replace(trainer={"max_stepz": 3})
    with pytest.raises(ConfigError, match="valid sections are"):
        cfg.replace(trainr={})
    # a section owns its mappings: changing the caller's dict changes nothing
    options = {"match_coarse": {"thr": 0.1}}
    model = ModelConfig(preset="default", options=options)
    options["match_coarse"]["thr"] = 0.9
    assert model.build().match_coarse.thr == pytest.approx(0.1)
    assert TrainConfig.preset("synthetic_homography", ["trainer.max_steps=3"]) == changed.replace(
        schedule={"milestones": [10, 14]}
    )


def test_one_preset_registry() -> None:
    from loftr_core.model.config import PRESETS

    assert list_presets() == list_presets("train") == builtin_configs()
    assert {"megadepth_outdoor_ds", "synthetic_homography"} <= set(list_presets("train"))
    assert list_presets("model") == ["default", "modern", *PRESETS]
    for name in list_presets("model"):
        assert ModelConfig(preset=name).build() == model_preset(name)
    with pytest.raises(ConfigError, match="'modern'"):
        ModelConfig(preset="nope")
    with pytest.raises(ConfigError, match="'train' or 'model'"):
        list_presets("other")  # type: ignore[arg-type]


def test_execution_options_are_a_trainer_setting_not_a_model_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from loftr_core import ExecutionOptions

    cfg = load_config(
        "synthetic_homography",
        ["trainer.execution={onednn: false, coarse_chunk_elements: 1000}"],
    )
    assert cfg.trainer.execution_options() == ExecutionOptions(
        onednn=False, coarse_chunk_elements=1000
    )
    assert "onednn" not in str(cfg.model.build().to_dict())
    with pytest.raises(ConfigError, match=r"trainer\.execution: .*fine_chunk_matches=0"):
        load_config("synthetic_homography", ["trainer.execution={fine_chunk_matches: 0}"])
    # a run config written before the split: its speed keys are dropped once, with a warning
    with caplog.at_level("WARNING", logger="loftr_train.train_config"):
        old = load_config(
            "synthetic_homography",
            ["model.options.coarse.compute_dtype=bfloat16", "model.options.coarse.d_ffn=64"],
        )
    assert "coarse.compute_dtype" in caplog.text and "coarse.d_ffn" in caplog.text
    assert caplog.text.count("ignoring") == 1
    assert not {"compute_dtype", "d_ffn"} & set(old.model.options["coarse"])
