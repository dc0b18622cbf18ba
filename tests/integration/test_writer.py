"""The reading writer: idempotent COPY batches, dead letters with reasons, commit before ack."""

import datetime as dt
import threading

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meterline.config.settings import WriterSettings
from meterline.ingest.model import DeadLetter, Quantity, Reading, Source
from meterline.ingest.writer import BatchingWriter, write_readings

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 10, 1, 2, 0, tzinfo=UTC)


@pytest.fixture
def meters(conn: psycopg.Connection, company) -> list[int]:
    conn.execute("INSERT INTO use_type VALUES (%s, 'residential', '居民')", [company.id])
    cust = conn.execute("INSERT INTO customer (company_id, code, name) VALUES (%s, 'C1', '王伟') RETURNING id",
                        [company.id]).fetchone()[0]
    acc = conn.execute(
        """INSERT INTO account (company_id, code, customer_id, address, use_type, tariff_id)
           VALUES (%s, 'A1', %s, '城东区人民路1号', 'residential', 'water-residential') RETURNING id""",
        [company.id, cust]).fetchone()[0]
    ids = []
    for i in range(1, 6):
        ids.append(conn.execute(
            """INSERT INTO meter (company_id, serial, comm_address, account_id, register_digits)
               VALUES (%s, %s, %s, %s, 5) RETURNING id""",
            [company.id, f"S{i}", f"dev-{i}", acc]).fetchone()[0])
    return ids


def _count(conn: psycopg.Connection, table: str = "reading") -> int:
    return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_same_batch_twice_is_stored_once(conn: psycopg.Connection, meters: list[int]) -> None:
    batch = [Reading(ts=T0 + dt.timedelta(days=d), value=1000 * d, meter_id=m, source=Source.MQTT)
             for m in meters for d in range(10)]
    first = write_readings(conn, batch)
    assert (first.submitted, first.written, first.duplicates, first.dead) == (50, 50, 0, 0)
    second = write_readings(conn, batch)
    assert (second.submitted, second.written, second.duplicates, second.dead) == (50, 0, 50, 0)
    assert _count(conn) == 50


def test_duplicates_inside_one_batch_are_counted(conn: psycopg.Connection, meters: list[int]) -> None:
    r = Reading(ts=T0, value=5, meter_id=meters[0])
    res = write_readings(conn, [r, r, r])
    assert (res.written, res.duplicates) == (1, 2)


def test_device_address_resolves_to_meter(conn: psycopg.Connection, meters: list[int]) -> None:
    res = write_readings(conn, [Reading(ts=T0, value=7, device="dev-3", source=Source.LORAWAN, source_ref="fcnt:12")])
    assert res.written == 1
    row = conn.execute("SELECT meter_id, value, source, source_ref, company_id FROM reading").fetchone()
    assert row[:4] == (meters[2], 7, Source.LORAWAN, "fcnt:12")
    assert row[4] is not None


def test_bad_rows_become_dead_letters_with_reasons(conn: psycopg.Connection, meters: list[int]) -> None:
    now = dt.datetime.now(UTC)
    good = Reading(ts=T0, value=10, meter_id=meters[0])
    bad = [
        Reading(ts=T0, value=10, device="nobody"),  # unknown meter (address)
        Reading(ts=T0, value=10, meter_id=999_999),  # unknown meter (id)
        Reading(ts=T0.replace(tzinfo=None), value=10, meter_id=meters[0]),  # naive timestamp
        Reading(ts=T0 + dt.timedelta(hours=1), value=-1, meter_id=meters[0]),  # negative register
        Reading(ts=T0 + dt.timedelta(hours=2), value=100_000_000, meter_id=meters[0]),  # 5 digits m3 wrap at 1e8 L
        Reading(ts=now + dt.timedelta(hours=2), value=10, meter_id=meters[0]),  # future
        Reading(ts=dt.datetime(1999, 12, 31, tzinfo=UTC), value=10, meter_id=meters[0]),  # far past
        Reading(ts=T0, value=10),  # no meter at all
    ]
    res = write_readings(conn, [good, *bad])
    assert res.written == 1 and res.dead == len(bad)
    assert res.reasons == {"unknown_meter": 2, "naive_timestamp": 1, "negative_register": 1,
                           "register_overflow": 1, "future_timestamp": 1, "past_timestamp": 1, "no_meter": 1}
    stored = dict(conn.execute("SELECT reason, count(*) FROM dead_letter GROUP BY reason").fetchall())
    assert stored == res.reasons
    msg, raw = conn.execute("SELECT message, raw FROM dead_letter WHERE reason = 'register_overflow'").fetchone()
    assert "100000000" in msg and "wraps at 100000000" in msg
    assert b'"value": 100000000' in raw or b'"value":100000000' in raw


def test_value_just_below_the_register_wrap_is_accepted(conn: psycopg.Connection, meters: list[int]) -> None:
    res = write_readings(conn, [Reading(ts=T0, value=99_999_999, meter_id=meters[0])])
    assert res.written == 1


def test_month_without_partition_is_created_on_demand(conn: psycopg.Connection, meters: list[int]) -> None:
    ts = dt.datetime(2031, 3, 5, tzinfo=UTC)
    # the future check would refuse 2031: pretend it is then by a wide tolerance
    res = write_readings(conn, [Reading(ts=ts, value=1, meter_id=meters[0])], future_tolerance_s=10**9)
    assert res.written == 1
    assert conn.execute("SELECT to_regclass('reading_y2031m03') IS NOT NULL").fetchone()[0]


def test_submitted_dead_letters_are_stored_in_the_same_commit(conn: psycopg.Connection, meters: list[int]) -> None:
    dl = DeadLetter(source="mqtt", reason="bad_json", message="Expecting value: line 1 column 1", raw=b"\xff{")
    res = write_readings(conn, [Reading(ts=T0, value=1, meter_id=meters[0])], [dl])
    assert res.dead_letters == 1 and res.written == 1
    assert conn.execute("SELECT source, reason, raw FROM dead_letter").fetchone() == ("mqtt", "bad_json", b"\xff{")


def test_batching_writer_resolves_each_submission_after_commit(db_dsn: str, meters: list[int]) -> None:
    settings = WriterSettings(batch_size=1000, max_delay_ms=20, connections=2, queue_max=10_000)
    seen_committed = []

    with psycopg.connect(db_dsn, autocommit=True) as check, BatchingWriter(db_dsn, settings) as writer:
        futures = []
        for i in range(60):
            r = Reading(ts=T0 + dt.timedelta(minutes=i), value=i, meter_id=meters[i % len(meters)], source=Source.MQTT)
            fut = writer.submit([r])

            def on_done(f, r=r):
                # by the time a future resolves, the reading is visible to another connection
                row = check_conn_lookup(db_dsn, r)
                seen_committed.append(row)

            fut.add_done_callback(on_done)
            futures.append(fut)
        # a repeat of the first 50 in one submission: all duplicates
        again = [Reading(ts=T0 + dt.timedelta(minutes=i), value=i, meter_id=meters[i % len(meters)]) for i in range(50)]
        res_again = writer.submit(again).result(30)
        results = [f.result(30) for f in futures]
        assert _count(check) == 60
    assert sum(r.written for r in results) + res_again.written == 60
    assert all(r.written + r.duplicates == 1 for r in results)
    assert res_again.written + res_again.duplicates == 50
    assert len(seen_committed) == 60 and all(seen_committed)


def check_conn_lookup(dsn: str, r: Reading) -> bool:
    with psycopg.connect(dsn) as c:
        return c.execute("SELECT 1 FROM reading WHERE meter_id = %s AND ts = %s", [r.meter_id, r.ts]).fetchone() is not None


def test_batching_writer_survives_a_row_the_database_refuses(db_dsn: str, conn: psycopg.Connection, meters: list[int]) -> None:
    # a constraint the writer does not know about refuses one reading; its neighbours still land
    conn.execute("ALTER TABLE reading ADD CONSTRAINT no_777 CHECK (value <> 777)")
    batch = [Reading(ts=T0 + dt.timedelta(minutes=i), value=v, meter_id=meters[0]) for i, v in enumerate([1, 2, 777, 4, 5])]
    with BatchingWriter(db_dsn, WriterSettings(connections=1)) as writer:
        res = writer.write(batch, timeout=30)
    assert res.written == 4 and res.dead == 1
    assert list(res.reasons) == ["db_23514"]
    assert _count(conn) == 4
    assert conn.execute("SELECT count(*) FROM dead_letter WHERE reason = 'db_23514'").fetchone()[0] == 1


def test_batching_writer_waits_out_a_lost_connection(db_dsn: str, conn: psycopg.Connection, meters: list[int]) -> None:
    with BatchingWriter(db_dsn, WriterSettings(connections=1, max_delay_ms=5)) as writer:
        assert writer.write([Reading(ts=T0, value=1, meter_id=meters[0])], timeout=30).written == 1
        # kill the writer's backend: the next batch must reconnect and still commit
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE application_name = 'meterline-writer' AND datname = current_database()")
        res = writer.write([Reading(ts=T0 + dt.timedelta(hours=1), value=2, meter_id=meters[0])], timeout=30)
    assert res.written == 1
    assert _count(conn) == 2


def test_submissions_from_many_threads_lose_nothing(db_dsn: str, conn: psycopg.Connection, meters: list[int]) -> None:
    settings = WriterSettings(batch_size=500, max_delay_ms=10, connections=2, queue_max=2_000)
    results = []
    lock = threading.Lock()
    with BatchingWriter(db_dsn, settings) as writer:
        def produce(k: int) -> None:
            for i in range(300):
                # each thread repeats a third of another thread's readings
                j = i if i % 3 else i + 300 * ((k + 1) % 4)
                r = Reading(ts=T0 + dt.timedelta(seconds=j + 300 * k * (i % 3 != 0)), value=j,
                            meter_id=meters[j % len(meters)], quantity=Quantity.VOLUME)
                res = writer.submit([r]).result(60)
                with lock:
                    results.append(res)

        threads = [threading.Thread(target=produce, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    stored = _count(conn)
    assert sum(r.written for r in results) == stored
    assert sum(r.written + r.duplicates for r in results) == 1200


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 50), st.integers(0, 10**7)), max_size=60))
def test_written_plus_duplicates_plus_dead_is_what_was_submitted(conn: psycopg.Connection, meters: list[int], rows) -> None:
    batch = [Reading(ts=T0 + dt.timedelta(hours=h), value=v, meter_id=meters[m]) for m, h, v in rows]
    before = _count(conn)
    res = write_readings(conn, batch)
    assert res.written + res.duplicates + res.dead == len(batch)
    assert _count(conn) - before == res.written
    stored = set(conn.execute("SELECT meter_id, ts FROM reading").fetchall())
    assert {(meters[m], T0 + dt.timedelta(hours=h)) for m, h, _ in rows} <= stored


def test_a_batch_of_old_and_new_readings_stores_only_the_new(conn: psycopg.Connection, meters: list[int]) -> None:
    old = [Reading(ts=T0 + dt.timedelta(hours=h), value=h, meter_id=meters[1]) for h in range(10)]
    assert write_readings(conn, old).written == 10
    mixed = old + [Reading(ts=T0 + dt.timedelta(hours=h), value=h, meter_id=meters[1]) for h in range(10, 20)]
    res = write_readings(conn, mixed)
    assert (res.written, res.duplicates) == (10, 10)
    assert _count(conn) == 20
    # and the next all-new batch is stored in full again
    assert write_readings(conn, [Reading(ts=T0 + dt.timedelta(hours=30), value=1, meter_id=meters[1])]).written == 1
