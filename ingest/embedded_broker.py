"""An in-process MQTT broker (amqtt) for the demo: no broker to install.

amqtt speaks MQTT 3.1.1 and keeps sessions in memory; it is a stand-in for the demo, not for
production (docker-compose.yml runs Mosquitto). Runs its own event loop on a thread.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from typing import Any

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedBroker:
    def __init__(self, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port or free_port()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="embedded-mqtt", daemon=True)
        self.broker: Any = None

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def start(self) -> "EmbeddedBroker":
        from amqtt.broker import Broker

        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        self.thread.start()

        async def boot() -> None:
            self.broker = Broker(config)
            await self.broker.start()

        asyncio.run_coroutine_threadsafe(boot(), self.loop).result(30)
        log.info("embedded MQTT broker on %s:%d", self.host, self.port)
        return self

    def stop(self) -> None:
        try:
            if self.broker is not None:
                asyncio.run_coroutine_threadsafe(self.broker.shutdown(), self.loop).result(30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            if not self.thread.is_alive():
                self.loop.close()

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
