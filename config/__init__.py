"""Typed settings (TOML + environment) and the sample utility configuration.

``load_settings()`` builds :class:`Settings`; the sample files next to this module
(``meterline.example.toml``, ``tariffs/``, ...) are the documented examples.
"""

from meterline.config.settings import (
    CONFIG_DIR,
    CompaniesSettings,
    DatabaseSettings,
    IngestSettings,
    SecuritySettings,
    Settings,
    UtilitySettings,
    WriterSettings,
    load_settings,
    settings_from_mapping,
)

__all__ = [
    "CONFIG_DIR",
    "CompaniesSettings",
    "DatabaseSettings",
    "IngestSettings",
    "SecuritySettings",
    "Settings",
    "UtilitySettings",
    "WriterSettings",
    "load_settings",
    "settings_from_mapping",
]
