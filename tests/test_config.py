"""Run configuration: unknown keys and wrong types name the field (in load_config and through `curate`,
exit code 2), `--set a.b=c` overrides, snapshot ids and shard ranges are validated."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.config import ConfigError, load_config


def write(tmp_path, text: str):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_unknown_key_names_the_field(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, "extract:\n  timeout: 3\n"))
    assert "extract.timeout: unknown field" in str(error.value)
    assert str(tmp_path / "run.yaml") in str(error.value)


def test_wrong_type_names_the_field_and_value(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, "extract:\n  timeout_s: soon\ninput:\n  max_warcs: 0\n"))
    message = str(error.value)
    assert "extract.timeout_s:" in message and "'soon'" in message
    assert "input.max_warcs:" in message and "greater than or equal to 1" in message


def test_set_overrides_file_values_and_parses_yaml(tmp_path):
    path = write(tmp_path, "out: runs/a\nextract:\n  timeout_s: 3\n")
    cfg = load_config(path, ["extract.timeout_s=0.5", "extract.languages=[en, de]", "extract.rules.enabled=false",
                             "input.shard_range=[2, 5]"])
    assert cfg.extract.timeout_s == 0.5 and cfg.extract.languages == ["en", "de"]
    assert cfg.extract.rules.enabled is False and cfg.input.shard_range == (2, 5)
    assert cfg.out == "runs/a"  # untouched fields keep the file's value
    with pytest.raises(ConfigError, match="extract.nope: unknown field"):
        load_config(path, ["extract.nope=1"])
    with pytest.raises(ConfigError, match="--set expects key=value"):
        load_config(path, ["extract.timeout_s"])


@pytest.mark.parametrize("snapshot", ["CC-MAIN-2024-33", "CC-MAIN-2013-20"])
def test_valid_snapshot_ids(snapshot):
    assert load_config(None, [f"input.snapshot={snapshot}"]).input.snapshot == snapshot


@pytest.mark.parametrize("snapshot",
                         ["CC-MAIN-2024", "cc-main-2024-33", "CC-MAIN-2024-33/", "2024-33", "CC-NEWS-2024-01"])
def test_invalid_snapshot_ids_name_the_field(snapshot):
    with pytest.raises(ConfigError, match=r"input.snapshot: .*CC-MAIN-2024-33"):
        load_config(None, [f"input.snapshot={snapshot}"])


def test_shard_range_must_be_ordered():
    with pytest.raises(ConfigError, match=r"input.shard_range: .*0 <= start < stop"):
        load_config(None, ["input.shard_range=[5, 2]"])


def test_cli_config_errors_exit_2_naming_the_field(tmp_path, capsys):
    path = write(tmp_path, "extract:\n  timeout_s: [1]\n  colour: blue\n")
    assert main(["extract", "--config", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "extract.timeout_s:" in err and "extract.colour: unknown field" in err
    assert main(["extract", "--snapshot", "CC-MAIN-24", "--out", str(tmp_path / "out")]) == 2
    assert "input.snapshot:" in capsys.readouterr().err
    assert not (tmp_path / "out").exists(), "nothing runs on a bad config"


def test_cli_subprocess_exit_code(tmp_path):
    # the console entry point as a process: the exit status a shell script sees
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", "extract", "--set", "extract.bogus=1",
                             "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "extract.bogus: unknown field" in result.stderr


def test_missing_config_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "none.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "extract: [unclosed\n"))


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "jobs" / "configs").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    cfg = load_config(str(path), [])
    assert cfg.input.warcs or cfg.input.snapshot
    if cfg.input.snapshot:  # the real-snapshot configs: a real endpoint, not the demo's tiny model
        assert cfg.input.base_url in ("https://data.commoncrawl.org/", "s3://commoncrawl/")
        assert not cfg.llm.serve_tiny_model
