"""Settings: strict TOML + environment, every problem reported at once."""

from pathlib import Path

import pytest

from meterline.config.settings import Settings, load_settings, settings_from_mapping
from meterline.errors import ConfigError


def test_defaults_without_any_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings(env={})
    assert s.database.dsn is None  # embedded default
    assert s.utility.timezone == "Asia/Shanghai"
    assert s.writer.connections == 2


def test_toml_and_environment(tmp_path: Path) -> None:
    f = tmp_path / "m.toml"
    f.write_text('[database]\npool_max_size = 4\n[utility]\ncompany = "north"\ntimezone = "Europe/Berlin"\n', encoding="utf-8")
    env = {"METERLINE_DSN": "postgresql://u@/x?host=/run/pg", "METERLINE__WRITER__BATCH_SIZE": "1234"}
    s = load_settings(f, env=env)
    assert s.database.pool_max_size == 4
    assert s.database.dsn == "postgresql://u@/x?host=/run/pg"
    assert s.utility.company == "north"
    assert s.writer.batch_size == 1234
    assert s.source == f


def test_every_problem_is_reported_with_its_path(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(
        '[database]\npool_min_size = 9\npool_max_size = 2\nbogus = 1\n'
        '[utility]\ntimezone = "Mars/Olympus"\n'
        '[writer]\nbatch_size = "many"\n'
        '[nosuchsection]\nx = 1\n', encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_settings(f, env={})
    text = "\n".join(err.value.problems)
    assert "database.bogus: unknown key" in text
    assert "database: pool sizes" in text
    assert "utility: timezone 'Mars/Olympus'" in text
    assert "writer.batch_size: expected an integer" in text
    assert "nosuchsection: unknown key" in text
    assert len(err.value.problems) == 5


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    f = tmp_path / "broken.toml"
    f.write_text("[database\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(f, env={})


def test_missing_explicit_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml", env={})


def test_example_config_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "config" / "meterline.example.toml"
    s = load_settings(example, env={})
    assert isinstance(s, Settings)


def test_mapping_builder_converts_strings() -> None:
    s = settings_from_mapping({"database": {"timescaledb": "false", "connect_timeout_s": "2.5"}})
    assert s.database.timescaledb is False
    assert s.database.connect_timeout_s == 2.5
