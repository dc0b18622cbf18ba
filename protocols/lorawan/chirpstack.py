"""ChirpStack v4 uplink events (MQTT ``application/{app}/device/{devEUI}/event/up``).

The JSON is the protobuf JSON mapping of ``integration.UplinkEvent`` (camelCase). Protobuf JSON
leaves out default values, so an event may lack ``fCnt`` (0), ``adr`` (false), ``confirmed``
(false), ``fPort`` (0) and ``data`` (empty); ``object`` is present only when the device profile
has a codec. ``devEui`` is read from ``deviceInfo``, else from the topic.
"""

from __future__ import annotations

from meterline.protocols.lorawan.uplink import Fields, Uplink, UplinkError, loads

SERVER = "chirpstack"
TOPIC = "application/+/device/+/event/up"


def decode_up(raw: bytes | str, topic: str | None = None) -> Uplink:
    """Parse one uplink event; raise :class:`UplinkError` naming the problem."""
    obj = loads(raw, SERVER)
    f = Fields(raw, SERVER)
    info = f.table(obj, "deviceInfo", "deviceInfo")
    dev_eui = f.eui(info, "devEui", "deviceInfo.devEui", required=False)
    if dev_eui is None and topic:
        parts = topic.split("/")
        if len(parts) >= 4 and parts[-4] == "device":
            dev_eui = f.eui({"devEui": parts[-3]}, "devEui", "topic")
    if dev_eui is None:
        raise f.fail("deviceInfo.devEui", "missing", "missing_field")
    obj_ = obj.get("object")
    if obj_ is not None and not isinstance(obj_, dict):
        raise f.fail("object", f"expected an object, got {type(obj_).__name__}", "wrong_type")
    tx = f.table(obj, "txInfo", "txInfo")
    profiles = tuple(p for p in (f.string(info, "deviceProfileName", "deviceInfo.deviceProfileName"),
                                 f.string(info, "deviceProfileId", "deviceInfo.deviceProfileId")) if p)
    try:
        return Uplink(
            server=SERVER,
            dev_eui=dev_eui,
            f_cnt=f.integer(obj, "fCnt", "fCnt", 0, 2**32 - 1),
            f_port=f.integer(obj, "fPort", "fPort", 0, 255),
            payload=f.base64(obj, "data", "data"),
            time=f.time(obj, "time", "time"),
            dedup_id=f.string(obj, "deduplicationId", "deduplicationId"),
            profiles=profiles,
            object=obj_,
            confirmed=f.boolean(obj, "confirmed", "confirmed"),
            adr=f.boolean(obj, "adr", "adr"),
            frequency=f.integer(tx, "frequency", "txInfo.frequency", 0, 2**32 - 1) or None,
            application=f.string(info, "applicationId", "deviceInfo.applicationId"),
            device_name=f.string(info, "deviceName", "deviceInfo.deviceName"),
        )
    except UplinkError as exc:
        exc.device = dev_eui
        raise
