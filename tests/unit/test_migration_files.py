"""Migration files: names, variants and statement splitting."""

from meterline.store import migrate


def test_every_version_is_common_or_a_plain_timescale_pair() -> None:
    found = migrate.discover()
    assert found, "no migrations found"
    for version, migs in found.items():
        assert {m.variant for m in migs} in ({None}, {"plain", "timescale"}), version
    assert list(found) == sorted(found)


def test_split_statements_respects_quotes_and_dollar_bodies() -> None:
    text = """
    -- a comment; with a semicolon
    CREATE TABLE a (x text DEFAULT 'a;b');
    CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN 1; END $$;
    /* block ; comment */ SELECT "we;ird" FROM a;
    SELECT $tag$ ; $tag$
    """
    parts = migrate.split_statements(text)
    assert len(parts) == 4
    assert parts[0].endswith("DEFAULT 'a;b')")
    assert "RETURN 1; END $$" in parts[1]
    assert parts[2].endswith('SELECT "we;ird" FROM a')
    assert parts[3] == "SELECT $tag$ ; $tag$"


def test_timescale_variant_is_run_statement_by_statement() -> None:
    pair = migrate.discover()[2]
    ts = next(m for m in pair if m.variant == "timescale")
    assert not ts.transactional
    statements = migrate.split_statements(ts.text)
    assert any("create_hypertable" in s for s in statements)
    assert any("timescaledb.continuous" in s for s in statements)
