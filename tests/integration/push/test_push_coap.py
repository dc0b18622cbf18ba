"""CoAP source end to end: real UDP, real PostgreSQL; 2.04 only after commit, 4.00 with a reason."""

import asyncio
import json
import time

import aiocoap
import cbor2

from meterline.protocols.coap import message

from .pushkit import IMEIS, CoapClient, ServiceThread, add_meters, count, free_udp_port, wait_for

T0 = int(time.time()) - 3600


def _service(db_dsn, port):
    return ServiceThread(db_dsn, {"nb": {"kind": "coap", "host": "127.0.0.1", "port": port}})


def test_json_and_cbor_single_and_batch(db_dsn, conn, company) -> None:
    ids = add_meters(conn, company.id)
    port = free_udp_port()
    svc = _service(db_dsn, port)
    with svc:
        wait_for(svc.source("nb").ready.is_set, what="coap server")
        c = CoapClient(port)
        try:
            r = c.post(IMEIS[0], json.dumps({"ts": T0, "value": 1000}).encode(), 50)
            assert r.code_str == "2.04" and r.payload == b"written=1 duplicates=0 dead=0"
            assert count(conn, "SELECT count(*) FROM reading") == 1  # committed before the answer
            r = c.post(IMEIS[1], cbor2.dumps({"ts": T0, "value": 2000}), 60)
            assert r.code_str == "2.04"
            batch = {"readings": [{"ts": T0 + 60, "value": 2100}, {"meter": IMEIS[2], "ts": T0, "value": "3.5",
                                                                    "unit": "m3"}]}
            r = c.post(IMEIS[1], cbor2.dumps(batch), 60)
            assert r.code_str == "2.04" and r.payload == b"written=2 duplicates=0 dead=0"
            r = c.post(IMEIS[0], json.dumps({"ts": T0, "value": 1000}).encode(), None)  # again, sniffed JSON
            assert r.payload == b"written=0 duplicates=1 dead=0"
        finally:
            c.close()
    rows = conn.execute("SELECT meter_id, value, source FROM reading ORDER BY value").fetchall()
    assert rows == [(ids[IMEIS[0]], 1000, 3), (ids[IMEIS[1]], 2000, 3), (ids[IMEIS[1]], 2100, 3),
                    (ids[IMEIS[2]], 3500, 3)]


def test_bad_bodies_answer_4_00_with_a_reason_and_become_dead_letters(db_dsn, conn, company) -> None:
    add_meters(conn, company.id)
    port = free_udp_port()
    svc = _service(db_dsn, port)
    with svc:
        wait_for(svc.source("nb").ready.is_set, what="coap server")
        c = CoapClient(port)
        try:
            cases = [
                (b"{oops", 50, "4.00", b"bad_json"),
                (b"\xff\xff\xff", 60, "4.00", b"bad_cbor"),
                (json.dumps({"ts": T0, "value": -3}).encode(), 50, "4.00", b"negative_register"),
                (json.dumps({"ts": T0 + 86400 * 30, "value": 3}).encode(), 50, "4.00", b"future_timestamp"),
                (json.dumps({"ts": T0, "value": "many"}).encode(), 50, "4.00", b"bad_value"),
                (b"", 50, "4.00", b"empty_body"),
            ]
            for body, fmt, code, reason in cases:
                r = c.post(IMEIS[0], body, fmt)
                assert (r.code_str, reason in r.payload) == (code, True), (body, r)
            r = c.post("000", json.dumps({"ts": T0, "value": 3}).encode())
            assert r.code_str == "4.04" and b"unknown_meter" in r.payload
            r = c.send(message.request(["x", "y", "z"], b"{}", 7, b"t"))
            assert r.code_str == "4.04"
        finally:
            c.close()
    assert count(conn, "SELECT count(*) FROM reading") == 0
    reasons = sorted(x for (x,) in conn.execute("SELECT reason FROM dead_letter").fetchall())
    assert reasons == sorted(["bad_json", "bad_cbor", "negative_register", "future_timestamp", "bad_value",
                              "empty_body", "unknown_meter"])
    raw = conn.execute("SELECT raw FROM dead_letter WHERE reason = 'bad_cbor'").fetchone()[0]
    assert bytes(raw) == b"\xff\xff\xff"
    reg = svc.service.metrics.registry
    assert reg.get_sample_value("meterline_ingest_dead_letters_total", {"source": "nb", "reason": "bad_json"}) == 1


def test_confirmable_retransmission_is_answered_once_processed_once(db_dsn, conn, company) -> None:
    add_meters(conn, company.id)
    port = free_udp_port()
    svc = _service(db_dsn, port)
    with svc:
        wait_for(svc.source("nb").ready.is_set, what="coap server")
        c = CoapClient(port)
        try:
            body = json.dumps({"ts": T0, "value": 5}).encode()
            datagram = message.request(["r", IMEIS[3]], body, 4242, b"\xaa", 50)
            first = c.send(datagram)
            again = c.send(datagram)  # same message id: a retransmission after a lost ACK
            assert first.code_str == again.code_str == "2.04"
            assert again.message_id == 4242 and again.payload == first.payload
        finally:
            c.close()
    reg = svc.service.metrics.registry
    assert reg.get_sample_value("meterline_ingest_messages_received_total", {"source": "nb"}) == 1
    assert count(conn, "SELECT count(*) FROM reading") == 1


def test_aiocoap_client(db_dsn, conn, company) -> None:
    add_meters(conn, company.id)
    port = free_udp_port()
    svc = _service(db_dsn, port)

    async def post() -> aiocoap.Message:
        ctx = await aiocoap.Context.create_client_context()
        try:
            req = aiocoap.Message(code=aiocoap.POST, uri=f"coap://127.0.0.1:{port}/r/{IMEIS[5]}",
                                  payload=cbor2.dumps({"ts": T0, "value": 77}), content_format=60)
            return await ctx.request(req).response
        finally:
            await ctx.shutdown()

    with svc:
        wait_for(svc.source("nb").ready.is_set, what="coap server")
        response = asyncio.run(post())
        assert str(response.code) == "2.04 Changed"
    assert count(conn, "SELECT value FROM reading") == 77
