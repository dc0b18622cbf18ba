"""The Things Stack v3 uplink messages (MQTT ``v3/{app}@{tenant}/devices/{device}/up``).

snake_case JSON: ``end_device_ids`` (``device_id``, ``dev_eui``, ``application_ids``),
``correlation_ids``, ``received_at`` and ``uplink_message`` (``f_port``, ``f_cnt``,
``frm_payload`` in base64, ``decoded_payload``, ``settings.frequency`` — a *string*,
``version_ids``). Empty and zero fields are omitted. A device registered without a DevEUI is
named by its device id. The uplink is identified by its ``as:up:`` correlation id.
"""

from __future__ import annotations

from meterline.protocols.lorawan.uplink import Fields, Uplink, UplinkError, loads

SERVER = "tts"
TOPIC = "v3/+/devices/+/up"


def decode_up(raw: bytes | str, topic: str | None = None) -> Uplink:
    """Parse one uplink message; raise :class:`UplinkError` naming the problem."""
    obj = loads(raw, SERVER)
    f = Fields(raw, SERVER)
    ids = f.table(obj, "end_device_ids", "end_device_ids", required=True)
    device_id = f.string(ids, "device_id", "end_device_ids.device_id")
    dev_eui = f.eui(ids, "dev_eui", "end_device_ids.dev_eui", required=False) or device_id
    if not dev_eui:
        raise f.fail("end_device_ids", "neither dev_eui nor device_id", "missing_field")
    try:
        up = f.table(obj, "uplink_message", "uplink_message", required=True)
        settings = f.table(up, "settings", "uplink_message.settings")
        version = f.table(up, "version_ids", "uplink_message.version_ids")
        decoded = up.get("decoded_payload")
        if decoded is not None and not isinstance(decoded, dict):
            raise f.fail("uplink_message.decoded_payload", f"expected an object, got {type(decoded).__name__}",
                         "wrong_type")
        corr = obj.get("correlation_ids") or []
        if not isinstance(corr, list) or not all(isinstance(c, str) for c in corr):
            raise f.fail("correlation_ids", "expected a list of strings", "wrong_type")
        dedup = next((c for c in corr if c.startswith("as:up:")), None)
        brand = f.string(version, "brand_id", "uplink_message.version_ids.brand_id")
        model = f.string(version, "model_id", "uplink_message.version_ids.model_id")
        profiles = tuple(p for p in (f"{brand}/{model}" if brand and model else None, model) if p)
        app_ids = f.table(ids, "application_ids", "end_device_ids.application_ids")
        time = f.time(obj, "received_at", "received_at") or f.time(up, "received_at", "uplink_message.received_at")
        return Uplink(
            server=SERVER,
            dev_eui=dev_eui,
            f_cnt=f.integer(up, "f_cnt", "uplink_message.f_cnt", 0, 2**32 - 1),
            f_port=f.integer(up, "f_port", "uplink_message.f_port", 0, 255),
            payload=f.base64(up, "frm_payload", "uplink_message.frm_payload"),
            time=time,
            dedup_id=dedup,
            profiles=profiles,
            object=decoded,
            confirmed=f.boolean(up, "confirmed", "uplink_message.confirmed"),
            frequency=f.integer(settings, "frequency", "uplink_message.settings.frequency", 0, 2**32 - 1) or None,
            application=f.string(app_ids, "application_id", "end_device_ids.application_ids.application_id"),
            device_name=device_id,
        )
    except UplinkError as exc:
        exc.device = dev_eui
        raise
