"""Configuration: defaults < YAML < command line, unknown keys and bad types rejected."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
import yaml

from training.config import (
    ConfigError,
    TrainConfig,
    build_config,
    config_from_dict,
    effective_config,
    format_config,
    load_yaml,
    save_config,
)
from training.runfolder import RunFolder


@dataclass
class Oversampling:
    it: float = 20.0
    le: float = 5.0


@dataclass
class TissueConfig(TrainConfig):
    phases: tuple[int, ...] = (2, 2, 2, 2, 2)
    oversampling: Oversampling = field(default_factory=Oversampling)
    classes: list[str] = field(default_factory=lambda: ["bg", "it"])


def test_precedence_defaults_yaml_command_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"epochs": 5, "lr": 1, "seed": 3,
                                    "phases": [1, 2], "oversampling": {"le": 3}}))
    cfg = build_config(TissueConfig, path, {"epochs": 7, "device": None, "resume": True})
    assert cfg.epochs == 7 and cfg.seed == 3 and cfg.resume is True
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.phases == (1, 2)
    assert cfg.oversampling == Oversampling(it=20.0, le=3.0)
    assert cfg.device == "auto"


def test_unknown_keys_are_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 2\nlearning_rate: 0.1\noversampling:\n  xx: 1\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: unknown key\(s\) learning_rate;"):
        build_config(TissueConfig, path)
    path.write_text("oversampling:\n  xx: 1\n")
    with pytest.raises(ConfigError, match=r"oversampling\.xx"):
        build_config(TissueConfig, path)
    with pytest.raises(ConfigError, match="command line: unknown key"):
        build_config(TrainConfig, None, {"bogus": 1})


@pytest.mark.parametrize(("key", "value"), [("epochs", "ten"), ("epochs", 1.5),
                                            ("amp", 1), ("lr", "fast"), ("phases", 3),
                                            ("device", None)])
def test_wrong_types_are_named(key, value):
    with pytest.raises(ConfigError, match=rf"config: {key} "):
        config_from_dict(TissueConfig, {key: value})


def test_optional_values_and_bad_yaml(tmp_path):
    cfg = build_config(TrainConfig, None, {"grad_clip": 1})
    assert cfg.grad_clip == 1.0
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_yaml(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(tmp_path / "missing.yaml")
    (tmp_path / "empty.yaml").write_text("")
    assert load_yaml(tmp_path / "empty.yaml") == {}


def test_effective_config_is_printed_and_saved(tmp_path):
    cfg = build_config(TissueConfig, None, {"epochs": 4})
    eff = effective_config(cfg)
    assert eff["phases"] == [2, 2, 2, 2, 2] and eff["oversampling"]["it"] == 20.0
    assert "epochs: 4" in format_config(cfg)
    run = RunFolder(tmp_path / "run").create()
    save_config(cfg, run)
    assert json.loads(run.config.read_text()) == eff
