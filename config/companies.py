"""Per-company configuration: each company's files override the deployment's defaults.

Tariffs, use types, bank file formats, late-fee policies and close calendars differ from one
company of a group to the next. They live as TOML files: the defaults under ``config/``
(e.g. ``config/tariffs.toml``), and a company's own version, when it has one, under
``<companies dir>/<company code>/`` with the same relative path (e.g.
``config/companies/acme/tariffs.toml``). The companies dir is ``companies.dir`` in the
settings, else ``config/companies`` beside this module.

* :meth:`CompanyConfig.path` — the file that applies to a company: its own, else the default;
* :meth:`CompanyConfig.load` — the TOML that applies, the company's file deep-merged over the
  default (tables merge key by key, anything else — values, lists — is replaced); a company
  file with ``replace = true`` at its top replaces the default whole;
* :meth:`CompanyConfig.companies_with` — which companies override a file.

Adoption (rating, ledger, exporters): where a module reads ``CONFIG_DIR / "tariffs.toml"``,
read ``CompanyConfig.from_settings(settings).load(company.code, "tariffs.toml")`` instead.
Unknown-key checking stays with the module that builds its dataclasses from the mapping.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from meterline.config.loader import read_toml
from meterline.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent
DEFAULT_COMPANIES_DIR = CONFIG_DIR / "companies"
_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")


@dataclass(frozen=True, slots=True)
class CompanyConfig:
    defaults_dir: Path = CONFIG_DIR
    companies_dir: Path = DEFAULT_COMPANIES_DIR

    @classmethod
    def from_settings(cls, settings: Any) -> "CompanyConfig":
        directory = getattr(getattr(settings, "companies", None), "dir", None)
        return cls(CONFIG_DIR, Path(directory) if directory else DEFAULT_COMPANIES_DIR)

    def _relative(self, relpath: str) -> PurePosixPath:
        rel = PurePosixPath(relpath)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise ConfigError([f"{relpath!r}: a configuration file is named by a relative path inside config/"])
        return rel

    def company_file(self, company_code: str, relpath: str) -> Path:
        if not _CODE.match(company_code):
            raise ConfigError([f"{company_code!r} is not a company code"])
        return self.companies_dir / company_code / self._relative(relpath)

    def path(self, company_code: str, relpath: str) -> Path:
        """The company's own file if it has one, else the default (which may not exist)."""
        own = self.company_file(company_code, relpath)
        return own if own.is_file() else self.defaults_dir / self._relative(relpath)

    def load(self, company_code: str, relpath: str) -> dict[str, Any]:
        """The company's TOML deep-merged over the default's (either may be missing; both: {})."""
        default = _read(self.defaults_dir / self._relative(relpath))
        own_path = self.company_file(company_code, relpath)
        own = _read(own_path)
        if own.pop("replace", False) is True:
            return own
        return merge(default, own)

    def companies_with(self, relpath: str) -> list[str]:
        rel = self._relative(relpath)
        if not self.companies_dir.is_dir():
            return []
        return sorted(d.name for d in self.companies_dir.iterdir() if (d / rel).is_file())


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    return read_toml(path, "company configuration")


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` deep-merged onto ``base``: tables merge key by key, other values are replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out
