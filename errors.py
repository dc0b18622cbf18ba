"""The one exception hierarchy of meterline.

Every error meterline raises on purpose derives from :class:`MeterlineError` and carries its
context as attributes (a meter id, the frame as hex, a line number) rather than only in the
message. Foreign errors are translated where they enter (``raise ... from exc``).
"""

from __future__ import annotations


class MeterlineError(Exception):
    """Base class of every error meterline raises on purpose."""


class ConfigError(MeterlineError):
    """Configuration is invalid; ``problems`` lists every problem found, each with its path."""

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} configuration problem(s){where}:\n{lines}")


class StoreError(MeterlineError):
    """The database could not be reached, started or migrated."""


class MigrationError(StoreError):
    def __init__(self, message: str, version: int | None = None) -> None:
        self.version = version
        super().__init__(message)


class DecodeError(MeterlineError):
    """A wire message or file could not be decoded. ``raw`` holds the offending bytes."""

    def __init__(self, message: str, raw: bytes | None = None, reason: str = "decode_error") -> None:
        self.raw = raw
        self.reason = reason
        super().__init__(message)

    @property
    def raw_hex(self) -> str:
        return self.raw.hex(" ") if self.raw else ""


class ImportRowError(MeterlineError):
    """One row of an imported file is invalid."""

    def __init__(self, line: int, message: str, column: str | None = None) -> None:
        self.line = line
        self.column = column
        col = f" [{column}]" if column else ""
        super().__init__(f"line {line}{col}: {message}")


class ImportFileError(MeterlineError):
    """An imported file was rejected as a whole; ``errors`` holds every row error found."""

    def __init__(self, path: str, errors: list[ImportRowError]) -> None:
        self.path = path
        self.errors = list(errors)
        shown = "\n".join(f"  {e}" for e in self.errors[:50])
        more = f"\n  ... and {len(self.errors) - 50} more" if len(self.errors) > 50 else ""
        super().__init__(f"{path}: {len(self.errors)} invalid row(s), nothing imported:\n{shown}{more}")


class NotFound(MeterlineError):
    """A named object (account, meter, bill, ...) does not exist in the current scope."""


class PermissionDenied(MeterlineError):
    """The caller may not do this: ``permission`` names what is missing (and for whom)."""

    def __init__(self, message: str, permission: str, actor: str | None = None, company: str | None = None) -> None:
        self.permission = permission
        self.actor = actor
        self.company = company
        super().__init__(message)


class SeparationOfDutiesError(PermissionDenied):
    """The same person may not both enter and approve (an adjustment, a write-off, ...)."""


class PersonalDataError(MeterlineError):
    """Personal data could not be encrypted or decrypted (missing key, wrong company, tampering)."""

    def __init__(self, message: str, key_id: str | None = None) -> None:
        self.key_id = key_id
        super().__init__(message)
