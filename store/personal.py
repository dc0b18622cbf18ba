"""Personal data: national ID numbers and phone numbers, encrypted at rest and masked elsewhere.

Storage. ``customer.id_number`` and ``customer.phone`` hold envelopes
``ml1:<key id>:<base64url(AES-256-SIV ciphertext)>``; the associated data binds a value to its
company and field, so a ciphertext copied to another customer column or company does not
decrypt. AES-SIV is deterministic: the same value under the same key gives the same envelope,
so re-importing an unchanged registry changes nothing (and equal values can be matched
without decrypting; that is the one thing it tells).

Keys come from ``[security] data_keys`` (key id → base64 of 64 bytes) and ``current_key``;
with no keys configured a key is generated on first use into ``security.key_file`` (default
``<user data dir>/meterline/data-keys.toml``, mode 0600), which is what the embedded default
and ``make demo`` use. Rotation: add a new key, make it ``current_key``, run
``meterline personal reencrypt`` (every envelope under another key, and any plain text left
from before encryption, is rewritten under the current key), then drop the old key.

Disclosure. Whoever holds ``personal.read`` sees the values; everyone else sees them masked
(``138****0001``); exports for outside parties carry none (``security.outside_personal_data``).
:class:`MaskingFilter` scrubs phone- and ID-shaped numbers from log records.
"""

from __future__ import annotations

import base64
import binascii
import enum
import logging
import os
import re
import secrets
import threading
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from meterline.errors import PersonalDataError

log = logging.getLogger(__name__)

PERSONAL_FIELDS = ("id_number", "phone")
ENVELOPE = re.compile(r"^ml1:([A-Za-z0-9_-]{1,32}):([A-Za-z0-9_-]+={0,2})$")
KEY_BYTES = 64


class Disclosure(enum.Enum):
    FULL = "full"      #: the values
    MASKED = "masked"  #: 138****0001
    NONE = "none"      #: blank


def generate_key() -> str:
    """A new data key as base64 (64 random bytes: AES-256-SIV)."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()


@dataclass(frozen=True)
class KeyRing:
    keys: dict[str, bytes]
    current: str

    def __post_init__(self) -> None:
        if self.current not in self.keys:
            raise PersonalDataError(f"current key {self.current!r} is not among the data keys", self.current)

    @classmethod
    def from_text(cls, keys: dict[str, str], current: str = "") -> "KeyRing":
        decoded: dict[str, bytes] = {}
        for kid, text in keys.items():
            try:
                raw = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise PersonalDataError(f"data key {kid!r} is not base64", kid) from exc
            if len(raw) != KEY_BYTES:
                raise PersonalDataError(f"data key {kid!r} must be {KEY_BYTES} bytes, got {len(raw)}", kid)
            decoded[kid] = raw
        if not decoded:
            raise PersonalDataError("no data keys configured ([security] data_keys)")
        return cls(decoded, current or list(decoded)[-1])

    @staticmethod
    def _aad(company_id: int, field: str) -> list[bytes]:
        return [b"meterline-personal-v1", str(int(company_id)).encode(), field.encode()]

    def encrypt(self, value: str, *, company_id: int, field: str) -> str:
        ct = AESSIV(self.keys[self.current]).encrypt(value.encode("utf-8"), self._aad(company_id, field))
        return f"ml1:{self.current}:{base64.urlsafe_b64encode(ct).decode()}"

    def decrypt(self, envelope: str, *, company_id: int, field: str) -> str:
        m = ENVELOPE.match(envelope)
        if not m:
            raise PersonalDataError(f"{field} is not an encrypted value")
        kid = m.group(1)
        key = self.keys.get(kid)
        if key is None:
            raise PersonalDataError(f"{field} is encrypted under key {kid!r}, which is not configured "
                                    "([security] data_keys)", kid)
        try:
            plain = AESSIV(key).decrypt(base64.urlsafe_b64decode(m.group(2)), self._aad(company_id, field))
        except (InvalidTag, binascii.Error, ValueError) as exc:
            raise PersonalDataError(f"{field} does not decrypt under key {kid!r} for company {company_id} "
                                    "(tampered, or copied from another company or column)", kid) from exc
        return plain.decode("utf-8")

    def protect(self, value: str | None, *, company_id: int, field: str) -> str | None:
        """Envelope for a value as given by a person or file (None and '' stay None)."""
        if value is None or value == "":
            return None
        if ENVELOPE.match(value):
            raise PersonalDataError(f"{field}: refusing to store an already encrypted value as plain text")
        return self.encrypt(value, company_id=company_id, field=field)

    def reveal(self, stored: str | None, disclosure: Disclosure, *, company_id: int, field: str) -> str | None:
        """What a reader with ``disclosure`` sees of a stored value."""
        if stored is None or disclosure is Disclosure.NONE:
            return None
        plain = self.decrypt(stored, company_id=company_id, field=field) if ENVELOPE.match(stored) else stored
        return plain if disclosure is Disclosure.FULL else mask(plain, field)


def mask(value: str | None, field: str = "") -> str | None:
    """``13800000001`` → ``138****0001``; ID numbers keep their first 3 and last 4 characters."""
    if value is None:
        return None
    if len(value) < 8:
        return "*" * len(value)
    keep_tail = 4
    head = 3
    return value[:head] + "*" * (len(value) - head - keep_tail) + value[-keep_tail:]


def is_masked(value: str | None) -> bool:
    return bool(value) and "*" in value  # type: ignore[operator]


# -- keys from settings ---------------------------------------------------------------------
_cache: dict[Any, KeyRing] = {}
_lock = threading.Lock()


def default_key_file() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("meterline")) / "data-keys.toml"


def keyring_from_settings(settings: Any) -> KeyRing:
    """The configured keys; with none, the generated key file (created on first use)."""
    sec = settings.security
    if sec.data_keys:
        return KeyRing.from_text(dict(sec.data_keys), sec.current_key)
    path = Path(sec.key_file).expanduser() if sec.key_file else default_key_file()
    with _lock:
        cached = _cache.get(path)
        if cached is not None:
            return cached
        ring = _load_or_create(path)
        _cache[path] = ring
        return ring


def _load_or_create(path: Path) -> KeyRing:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        kid = "local1"
        text = f'# generated by meterline: personal-data key (back it up; losing it loses the data)\ncurrent_key = "{kid}"\n[data_keys]\n{kid} = "{generate_key()}"\n'
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # created concurrently by another process: read theirs
        else:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            log.warning("generated a personal-data key in %s; configure [security] data_keys for production", path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise PersonalDataError(f"cannot read the data key file {path}: {exc}") from exc
    keys = data.get("data_keys") or {}
    if not keys:
        raise PersonalDataError(f"data key file {path} has no [data_keys]")
    return KeyRing.from_text({str(k): str(v) for k, v in keys.items()}, str(data.get("current_key", "")))


def default_keyring() -> KeyRing:
    """Keys from the process's settings (file + environment), for callers that were given none."""
    from meterline.config.settings import load_settings

    return keyring_from_settings(load_settings())


# -- re-encryption ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ReencryptReport:
    customers: int   #: customers with personal data
    rewritten: int   #: customers whose values were (re-)encrypted under the current key
    plain: int       #: values that were plain text (from before encryption)


def reencrypt(conn: psycopg.Connection, company_id: int, keyring: KeyRing) -> ReencryptReport:
    """Rewrite every personal value of the company under the current key (in one transaction)."""
    fields = ", ".join(PERSONAL_FIELDS)
    rewritten = plain = total = 0
    with conn.transaction():
        rows = conn.execute(
            f"SELECT id, {fields} FROM customer WHERE company_id = %s AND num_nonnulls({fields}) > 0 ORDER BY id FOR UPDATE",
            [company_id]).fetchall()
        for cid, *values in rows:
            total += 1
            new: list[str | None] = []
            for field, stored in zip(PERSONAL_FIELDS, values):
                if stored is None:
                    new.append(None)
                    continue
                m = ENVELOPE.match(stored)
                if m and m.group(1) == keyring.current:
                    new.append(stored)
                    continue
                if not m:
                    plain += 1
                    value = stored
                else:
                    value = keyring.decrypt(stored, company_id=company_id, field=field)
                new.append(keyring.encrypt(value, company_id=company_id, field=field))
            if new != list(values):
                sets = ", ".join(f"{f} = %s" for f in PERSONAL_FIELDS)
                conn.execute(f"UPDATE customer SET {sets} WHERE id = %s", [*new, cid])
                rewritten += 1
    return ReencryptReport(total, rewritten, plain)


# -- logs -------------------------------------------------------------------------------------
_LOG_PATTERNS = (
    re.compile(r"(?<![0-9A-Za-z])[1-9]\d{16}[\dXx](?![0-9A-Za-z])"),  # resident ID number
    re.compile(r"(?<![0-9A-Za-z])1[3-9]\d{9}(?![0-9A-Za-z])"),         # mobile phone
)


def mask_text(text: str) -> str:
    """Mask anything phone- or ID-number-shaped in free text (log lines, error messages)."""
    for pattern in _LOG_PATTERNS:
        text = pattern.sub(lambda m: mask(m.group(0)) or "", text)
    return text


class MaskingFilter(logging.Filter):
    """A handler filter that masks personal data in every record it passes on."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to the handler to report
            return True
        masked = mask_text(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True

