"""LoRaWAN uplinks as network servers republish them over MQTT, and the payload codecs.

* :mod:`.chirpstack` — ChirpStack v4 ``application/+/device/+/event/up`` events (JSON);
* :mod:`.tts` — The Things Stack v3 ``v3/+/devices/+/up`` messages (JSON);
* both produce one :class:`~.uplink.Uplink` (device EUI, frame counter, port, payload, ids);
* :mod:`.codecs` — the payload codec registry, chosen per device profile, turning an uplink's
  bytes (or the network server's decoded ``object``) into register values;
* :func:`~.uplink.to_readings` puts the two together into :class:`~meterline.ingest.model.Reading` s.

Pure: no sockets, no clock.
"""

from meterline.protocols.lorawan.uplink import Uplink, UplinkError, to_readings

__all__ = ["Uplink", "UplinkError", "to_readings"]
