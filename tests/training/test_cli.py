import json
import subprocess
import sys
from pathlib import Path

from training.cli import environment_report, main

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
