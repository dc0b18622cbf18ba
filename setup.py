"""Packaging shim: the repository root *is* the ``meterline`` package.

The architecture keeps its top-level folders (``protocols/ ingest/ store/ rating/ ledger/
exporters/ config/``) at the root of the repository, so the root directory is mapped onto the
``meterline`` import name. Everything else lives in pyproject.toml.
"""

from setuptools import find_packages, setup

SUBPACKAGES = ("cli", "protocols", "ingest", "store", "rating", "ledger", "exporters", "config")

packages = ["meterline"] + [
    f"meterline.{name}"
    for name in find_packages(".", include=[*SUBPACKAGES, *(f"{s}.*" for s in SUBPACKAGES)])
]

setup(
    packages=packages,
    package_dir={"meterline": "."},
    package_data={
        "meterline.store": ["migrations/*.sql"],
        "meterline.config": ["*.toml", "**/*.toml", "**/*.json", "**/*.yml", "**/*.conf"],
        "meterline.protocols": ["**/*.toml", "**/*.json"],
    },
    include_package_data=False,
)
