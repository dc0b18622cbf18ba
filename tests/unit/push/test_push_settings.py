"""[ingest] settings: validated at load; the example file's sources build as documented."""

import re
import tomllib
from pathlib import Path

import pytest

from meterline.config.settings import WriterSettings, settings_from_mapping
from meterline.errors import ConfigError
from meterline.ingest.sources import Sink, load

EXAMPLE = Path(__file__).resolve().parents[3] / "config" / "meterline.example.toml"


class _Writer:
    """Stands in for the writer where only its settings are read (no database is touched)."""

    settings = WriterSettings()

    def submit(self, readings, dead_letters):  # pragma: no cover - never called here
        raise AssertionError("nothing is written in these tests")


def test_ingest_section_problems_reported_together() -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_mapping({"ingest": {"metrics_port": 70000, "shutdown_timeout_s": 0,
                                          "sources": {"a": {"port": 1}}, "colour": 1}})
    text = str(info.value)
    assert "metrics_port" in text and "shutdown_timeout_s" in text and "sources.a.kind" in text and "colour" in text


def test_example_sources_build() -> None:
    """Uncomment the example's source tables and keys: every documented key is accepted."""
    text = EXAMPLE.read_text()
    section = text[text.index("[ingest]"):]
    lines = [re.sub(r"^# ", "", line) if re.match(r"^# (\[|[a-z_]+ = )", line) else line
             for line in section.splitlines()]
    data = tomllib.loads("\n".join(lines))
    sources = data["ingest"]["sources"]
    assert set(sources) == {"nbiot", "lorawan", "coap"}
    sink = Sink(_Writer())  # type: ignore[arg-type]
    for name, table in sources.items():
        source = load(table["kind"])(name, table, sink)
        assert source.name == name
    lora = load("mqtt")("lorawan", sources["lorawan"], sink)
    assert set(lora.format.profiles.by_name) == {"Kamstrup flowIQ 2200", "Milesight EM300-DI"}
    assert lora.settings.filters() == ["application/+/device/+/event/up"]
    nb = load("mqtt")("nbiot", sources["nbiot"], sink)
    assert nb.settings.filters() == ["$share/meterline/meterline/up/#"]
