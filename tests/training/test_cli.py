import json
import subprocess
import sys
from pathlib import Path

import pytest

from training.cli import environment_report, main
from training.tasks import available_tasks

REPO = Path(__file__).resolve().parents[2]


def test_help_runs_as_a_module_from_the_repository_root():
    result = subprocess.run([sys.executable, "-m", "training", "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "python -m training" in result.stdout and "info" in result.stdout


def test_info_reports_the_auto_device(capsys):
    assert main(["info", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    expected = environment_report()["auto_device"]
    assert report["auto_device"] == expected in {"cpu", "cuda", "mps"}
    assert report["torch"].startswith("2.")


def test_no_task_prints_help(capsys):
    assert main([]) == 0
    assert "usage:" in capsys.readouterr().out


@pytest.mark.parametrize("task", list(available_tasks()))
def test_every_task_has_help_with_the_shared_options(task, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([task, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--data", "--config", "--init", "--out", "--epochs", "--device", "--resume",
                   "--seed"):
        assert option in text


def test_evaluate_needs_a_model_and_data(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--data", "x"])
    assert exit_info.value.code == 2
    assert "--model" in capsys.readouterr().err


def test_set_options_parse_yaml_values_and_refuse_a_bare_key():
    from training.cli import set_options
    from training.config import ConfigError

    assert set_options(["fold=2", "arch={depth: 4, deep_convs: [2, 2, 3, 3]}", "lr=0.001",
                        "augment=false"]) == {
        "fold": 2, "arch": {"depth": 4, "deep_convs": [2, 2, 3, 3]}, "lr": 0.001,
        "augment": False}
    assert set_options(None) == {}
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        set_options(["fold"])
    with pytest.raises(ConfigError, match="not valid YAML"):
        set_options(["arch={depth: [4"])
