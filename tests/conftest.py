"""Test fixtures: real PostgreSQL (tests/fixtures/postgres.py) and more, as plugins."""

pytest_plugins = ["tests.fixtures.postgres", "tests.fixtures.mqtt"]
