"""Tariffs: TOML files in a directory (default ``config/tariffs/``), strictly validated.

A file holds one tariff: an ``id``, a ``use_type``, optional ``company`` (a company code: the
file then overrides the tariff of that id for that company only), tariff-wide rules, and one or
more ``[[versions]]`` by effective date. Every problem of every file is reported at once, each
with its file and key (:class:`meterline.errors.ConfigError`). The shape, with defaults::

    id = "water-residential"            # required; [a-z0-9][a-z0-9_.-]*
    name = "..."                        # free text
    use_type = "residential"            # required
    company = "sz"                      # optional: per-company override
    rounding = "half_up"                # each line rounded once: half_up|half_even|down|up
    tax_rounding = "line"               # tax rounded per line, or per bill (then spread by largest remainder)
    year_start = "01-01"                # MM-DD: when the year of annual tiers starts
    threshold_scaling = "months"        # period tiers: thresholds per month × months of the bill
                                        # (round(days / 30.4375), at least 1); "days": × days / 30
    minor_units = 100                   # fen per yuan

    [[versions]]
    effective = "2025-01-01"            # in force from this day (inclusive) until the next version
    basis = "period"                    # "period": tiers per bill; "annual": cumulative over the tariff year
    thresholds = ["22", "30"]           # m³ (per month, or per year for annual): tiers 0–22, 22–30, >30
    [versions.household]                # optional
    base_size = 4                       # each person above this raises every threshold by per_person
    per_person = "5"                    #   m³, one value or one per threshold
    min_size = 5                        # households of at least min_size persons ...
    raise = ["30", "0"]                 #   ... get threshold j raised by raise[j] m³
    [[versions.components]]             # at least one
    code = "water"                      # ASCII [a-z][a-z0-9_]*; the bill line's component
    prices = ["2.00", "3.38", "4.38"]   # tiered: yuan per m³, one per tier (len(thresholds) + 1)
    # price = "1.25"                    # ... or flat: one price for all volume
    # thresholds = ["10"]               # a component's own tiers (default: the version's)
    # apportioned_price = "2.00"        # price of apportioned volume (default: first-tier price);
                                        #   flat: it takes no tier volume, nor annual year to date
    tax_rate = "0"                      # fraction: "0.09" is 9 %
    minimum = true                      # counts towards the minimum charge
    [versions.fixed]                    # optional: fixed charge per month by meter size
    tax_rate = "0"
    sizes = { DN15 = "3.00", DN20 = "5.00" }
    default = "3.00"                    # sizes not listed (without it: those rows are errors)
    [versions.minimum]                  # optional: per month; tops the volumetric amount up to this
    amount = "5.00"
    tax_rate = "0"
    [versions.heating]                  # optional: area-based heating
    price = "24.00"                     # yuan per m² per season
    season_start = "11-15"              # MM-DD first heated day
    season_end = "03-15"                # MM-DD last heated day
    tax_rate = "0.09"

Inside, thresholds are integer litres, prices integers at :data:`money.PRICE_SCALE`, tax rates
parts per million (see :mod:`meterline.rating.money`).
"""

from __future__ import annotations

import datetime as dt
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from meterline.errors import ConfigError
from meterline.rating import money
from meterline.rating.errors import RatingError, UnknownTariff

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "config" / "tariffs"

_ID = re.compile(r"[a-z0-9][a-z0-9_.-]*")
_CODE = re.compile(r"[a-z][a-z0-9_]*")
_RESERVED = {"fixed", "minimum", "heating"}


@dataclass(frozen=True, slots=True)
class Component:
    code: str
    #: upper bounds of tiers 1..k in litres (per month, or per year for annual tiers); () = flat
    thresholds: tuple[int, ...]
    #: unit price per tier (len(thresholds) + 1), at PRICE_SCALE per m³
    prices: tuple[int, ...]
    apportioned_price: int
    tax_ppm: int
    #: counts towards the minimum charge
    minimum: bool
    #: household raise per extra person / fixed raise, litres per threshold
    per_person: tuple[int, ...]
    raise_: tuple[int, ...]

    @property
    def tiered(self) -> bool:
        return bool(self.thresholds)


@dataclass(frozen=True, slots=True)
class Heating:
    price: int                      # per m² per season, at PRICE_SCALE
    season_start: tuple[int, int]   # (month, day)
    season_end: tuple[int, int]     # (month, day), inclusive
    tax_ppm: int

    def season_containing(self, day: dt.date) -> tuple[dt.date, dt.date] | None:
        """The season (first, last heated day) that contains ``day``, or None."""
        for year in (day.year - 1, day.year):
            first = _month_day(year, self.season_start)
            last = _month_day(year + (1 if self.season_end < self.season_start else 0), self.season_end)
            if first <= day <= last:
                return first, last
        return None

    def seasons_overlapping(self, start: dt.date, end: dt.date) -> list[tuple[dt.date, dt.date]]:
        out = []
        for year in range(start.year - 1, end.year + 1):
            first = _month_day(year, self.season_start)
            last = _month_day(year + (1 if self.season_end < self.season_start else 0), self.season_end)
            if first <= end and last >= start:
                out.append((first, last))
        return out


@dataclass(frozen=True, slots=True)
class Version:
    tariff_id: str
    effective: dt.date
    basis: str                                  # "period" | "annual"
    components: tuple[Component, ...]
    household_base: int                         # 0: no per-person raise
    household_min: int                          # 0: no fixed raise
    fixed_sizes: Mapping[str, int] = field(default_factory=dict)
    fixed_default: int | None = None
    fixed_tax_ppm: int = 0
    minimum: int | None = None                  # per month, at PRICE_SCALE (fen × 10^4)
    minimum_tax_ppm: int = 0
    heating: Heating | None = None

    @property
    def label(self) -> str:
        return f"{self.tariff_id}@{self.effective.isoformat()}"

    @property
    def has_fixed(self) -> bool:
        return bool(self.fixed_sizes) or self.fixed_default is not None

    def fixed_price(self, size: str | None) -> int | None:
        """The monthly fixed charge for a meter size (None: this version has none for it)."""
        if size is not None and size in self.fixed_sizes:
            return self.fixed_sizes[size]
        return self.fixed_default


@dataclass(frozen=True, slots=True)
class Tariff:
    id: str
    name: str
    use_type: str
    company: str | None
    rounding: str
    tax_rounding: str
    year_start: tuple[int, int]
    threshold_scaling: str
    minor_units: int
    versions: tuple[Version, ...]           # by effective date, ascending
    source: Path | None = None

    def version_at(self, day: dt.date) -> Version | None:
        found = None
        for v in self.versions:
            if v.effective <= day:
                found = v
            else:
                break
        return found

    def versions_between(self, start: dt.date, end: dt.date) -> list[tuple[Version, dt.date, dt.date]]:
        """The versions in force over [start, end] with the days each covers (inclusive).
        Raises RatingError if no version is in force on ``start``."""
        first = self.version_at(start)
        if first is None:
            raise RatingError(f"tariff {self.id}: no version in force on {start.isoformat()}", self.id)
        out = []
        cur, cur_from = first, start
        for v in self.versions:
            if start < v.effective <= end:
                out.append((cur, cur_from, v.effective - dt.timedelta(days=1)))
                cur, cur_from = v, v.effective
        out.append((cur, cur_from, end))
        return out

    def rating_parts(self, start: dt.date, end: dt.date) -> list[tuple[Version, dt.date, dt.date, dt.date | None]]:
        """:meth:`versions_between`, with the parts of annual-tier versions also split where a
        tariff year starts inside the period: ``(version, from, to, year_from)``, ``year_from``
        the start of the tariff year of an annual part (None for per-period tiers)."""
        out: list[tuple[Version, dt.date, dt.date, dt.date | None]] = []
        for version, p_from, p_to in self.versions_between(start, end):
            if version.basis != "annual":
                out.append((version, p_from, p_to, None))
                continue
            cur = p_from
            while True:
                year = self.year_start_for(cur)
                following = _month_day(year.year + 1, self.year_start)
                if following > p_to:
                    out.append((version, cur, p_to, year))
                    break
                out.append((version, cur, following - dt.timedelta(days=1), year))
                cur = following
        return out

    def year_start_for(self, day: dt.date) -> dt.date:
        candidate = _month_day(day.year, self.year_start)
        return candidate if candidate <= day else _month_day(day.year - 1, self.year_start)


class TariffBook:
    """Every tariff of a directory; ``get(id, company)`` prefers the company's own file."""

    def __init__(self, tariffs: Mapping[tuple[str, str | None], Tariff], source: Path | None = None) -> None:
        self._tariffs = dict(tariffs)
        self.source = source

    @classmethod
    def load(cls, directory: str | Path | None = None) -> "TariffBook":
        directory = Path(directory) if directory is not None else DEFAULT_DIR
        if not directory.is_dir():
            raise ConfigError([f"tariff directory {directory} does not exist"], str(directory))
        problems: list[str] = []
        tariffs: dict[tuple[str, str | None], Tariff] = {}
        files = sorted(directory.glob("*.toml"))
        if not files:
            problems.append(f"{directory}: no tariff files (*.toml)")
        for path in files:
            tariff = _load_file(path, problems)
            if tariff is None:
                continue
            key = (tariff.id, tariff.company)
            if key in tariffs:
                other = tariffs[key].source.name if tariffs[key].source else "?"
                problems.append(f"{path.name}: id: tariff {tariff.id!r}"
                                f"{' for company ' + tariff.company if tariff.company else ''} is also defined in {other}")
                continue
            tariffs[key] = tariff
        if problems:
            raise ConfigError(problems, str(directory))
        return cls(tariffs, directory)

    from_dir = load

    @classmethod
    def from_texts(cls, texts: Mapping[str, str]) -> "TariffBook":
        """A book from TOML texts by file name (tests, embedding)."""
        problems: list[str] = []
        tariffs: dict[tuple[str, str | None], Tariff] = {}
        for name, text in texts.items():
            tariff = _load_text(name, text, None, problems)
            if tariff is not None:
                if (tariff.id, tariff.company) in tariffs:
                    problems.append(f"{name}: id: tariff {tariff.id!r} defined twice")
                tariffs[(tariff.id, tariff.company)] = tariff
        if problems:
            raise ConfigError(problems, "<texts>")
        return cls(tariffs)

    def __iter__(self) -> Iterator[Tariff]:
        return iter(sorted(self._tariffs.values(), key=lambda t: (t.id, t.company or "")))

    def __contains__(self, tariff_id: str) -> bool:
        return any(k[0] == tariff_id for k in self._tariffs)

    def ids(self) -> list[str]:
        return sorted({k[0] for k in self._tariffs})

    def get(self, tariff_id: str, company: str | None = None) -> Tariff:
        if company is not None and (tariff_id, company) in self._tariffs:
            return self._tariffs[(tariff_id, company)]
        if (tariff_id, None) in self._tariffs:
            return self._tariffs[(tariff_id, None)]
        raise UnknownTariff(f"unknown tariff {tariff_id!r}"
                            f"{' for company ' + company if company else ''} (known: {', '.join(self.ids())})",
                            tariff_id)

    def year_start(self, tariff_id: str, day: dt.date, company: str | None = None) -> dt.date:
        """Start of the annual-tier year of this tariff that contains ``day``."""
        return self.get(tariff_id, company).year_start_for(day)


def tariff_dir(settings: Any) -> Path:
    """The tariff directory of ``settings.rating.tariff_dir`` (relative to the settings file), else the default."""
    path = settings.rating.tariff_dir
    if path is None:
        return DEFAULT_DIR
    path = Path(path).expanduser()
    if not path.is_absolute() and settings.source is not None:
        path = Path(settings.source).parent / path
    return path


def load_book(settings: Any) -> TariffBook:
    """The tariffs the settings name (see :func:`tariff_dir`)."""
    return TariffBook.load(tariff_dir(settings))


# --- loading -------------------------------------------------------------------------------

def _month_day(year: int, md: tuple[int, int]) -> dt.date:
    month, day = md
    if month == 2 and day == 29:
        try:
            return dt.date(year, 2, 29)
        except ValueError:
            return dt.date(year, 3, 1)
    return dt.date(year, month, day)


def _load_file(path: Path, problems: list[str]) -> Tariff | None:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{path.name}: cannot read: {exc}")
        return None
    return _load_text(path.name, text, path, problems)


def _load_text(name: str, text: str, path: Path | None, problems: list[str]) -> Tariff | None:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        problems.append(f"{name}: not valid TOML: {exc}")
        return None
    before = len(problems)
    r = _Reader(name, problems)
    tariff = r.tariff(data, path)
    return tariff if len(problems) == before else None


class _Reader:
    """Reads one file's mapping, appending every problem as ``file: key.path: message``."""

    def __init__(self, name: str, problems: list[str]) -> None:
        self.name = name
        self.problems = problems

    def err(self, path: str, message: str) -> None:
        self.problems.append(f"{self.name}: {path}: {message}")

    def keys(self, table: Mapping[str, Any], path: str, allowed: set[str], required: set[str] = frozenset()) -> None:
        for key in table:
            if key not in allowed:
                self.err(_join(path, key), f"unknown key (known keys: {', '.join(sorted(allowed))})")
        for key in sorted(required - set(table)):
            self.err(_join(path, key), "required key is missing")

    def table(self, value: Any, path: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            self.err(path, f"expected a table, got {type(value).__name__}")
            return {}
        return value

    def text(self, table: Mapping[str, Any], key: str, path: str, default: str | None = None,
             pattern: re.Pattern[str] | None = None, choices: tuple[str, ...] | None = None) -> str | None:
        if key not in table:
            return default
        value = table[key]
        if not isinstance(value, str):
            self.err(_join(path, key), f"expected a string, got {value!r}")
            return default
        if pattern is not None and not pattern.fullmatch(value):
            self.err(_join(path, key), f"{value!r} does not match {pattern.pattern}")
            return default
        if choices is not None and value not in choices:
            self.err(_join(path, key), f"{value!r} is not one of {', '.join(choices)}")
            return default
        return value

    def integer(self, table: Mapping[str, Any], key: str, path: str, default: int, lo: int, hi: int) -> int:
        if key not in table:
            return default
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            self.err(_join(path, key), f"expected a whole number between {lo} and {hi}, got {value!r}")
            return default
        return value

    def boolean(self, table: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
        if key not in table:
            return default
        value = table[key]
        if not isinstance(value, bool):
            self.err(_join(path, key), f"expected true or false, got {value!r}")
            return default
        return value

    def scaled(self, value: Any, path: str, fn: Any, *args: Any) -> int | None:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            self.err(path, f"write numbers as decimal strings in quotes (\"{value}\"), so they stay exact")
            return None
        try:
            return fn(value, *args)
        except money.MoneyFormatError as exc:
            self.err(path, str(exc))
            return None

    def month_day(self, table: Mapping[str, Any], key: str, path: str, default: tuple[int, int] | None) -> tuple[int, int] | None:
        text = self.text(table, key, path)
        if text is None:
            return default
        m = re.fullmatch(r"(\d{2})-(\d{2})", text)
        try:
            if not m:
                raise ValueError
            dt.date(2000, int(m.group(1)), int(m.group(2)))
        except ValueError:
            self.err(_join(path, key), f"{text!r} is not a day of the year as MM-DD")
            return default
        return int(m.group(1)), int(m.group(2))

    def scaled_list(self, table: Mapping[str, Any], key: str, path: str, fn: Any, *args: Any) -> list[int] | None:
        value = table[key]
        if not isinstance(value, list):
            self.err(_join(path, key), f"expected a list of decimal strings, got {value!r}")
            return None
        out = [self.scaled(v, f"{_join(path, key)}[{i}]", fn, *args) for i, v in enumerate(value)]
        return None if any(v is None for v in out) else out  # type: ignore[misc]

    # -- the tariff ------------------------------------------------------------------------
    def tariff(self, data: Mapping[str, Any], path: Path | None) -> Tariff | None:
        self.keys(data, "", {"id", "name", "use_type", "company", "rounding", "tax_rounding", "year_start",
                             "threshold_scaling", "minor_units", "versions"}, {"id", "use_type", "versions"})
        tid = self.text(data, "id", "", pattern=_ID) or "?"
        name = self.text(data, "name", "", default=tid) or tid
        use_type = self.text(data, "use_type", "", pattern=_CODE) or "?"
        company = self.text(data, "company", "", pattern=re.compile(r"[A-Za-z0-9_-]{1,32}"))
        rounding = self.text(data, "rounding", "", default="half_up", choices=money.RULES) or "half_up"
        tax_rounding = self.text(data, "tax_rounding", "", default="line", choices=("line", "bill")) or "line"
        year_start = self.month_day(data, "year_start", "", (1, 1)) or (1, 1)
        scaling = self.text(data, "threshold_scaling", "", default="months", choices=("months", "days")) or "months"
        minor = self.integer(data, "minor_units", "", 100, 1, 1000)
        if minor not in (1, 10, 100, 1000):
            self.err("minor_units", "must be 1, 10, 100 or 1000")
        raw_versions = data.get("versions", [])
        if not isinstance(raw_versions, list) or not raw_versions:
            if "versions" in data:
                self.err("versions", "expected one or more [[versions]] tables")
            return None
        versions = [self.version(tid, v, f"versions[{i}]", minor) for i, v in enumerate(raw_versions)]
        dates = [v.effective for v in versions if v is not None]
        if len(set(dates)) != len(dates):
            self.err("versions", "two versions have the same effective date")
        if dates != sorted(dates):
            self.err("versions", "versions must be listed by effective date, oldest first")
        if any(v is None for v in versions):
            return None
        return Tariff(id=tid, name=name, use_type=use_type, company=company, rounding=rounding,
                      tax_rounding=tax_rounding, year_start=year_start, threshold_scaling=scaling,
                      minor_units=minor, versions=tuple(versions), source=path)  # type: ignore[arg-type]

    def version(self, tid: str, raw: Any, path: str, minor: int) -> Version | None:
        t = self.table(raw, path)
        before = len(self.problems)
        self.keys(t, path, {"effective", "basis", "thresholds", "household", "components", "fixed", "minimum",
                            "heating"}, {"effective"})
        effective = None
        eff = t.get("effective")
        if isinstance(eff, dt.date) and not isinstance(eff, dt.datetime):
            effective = eff
        elif isinstance(eff, str):
            try:
                effective = dt.date.fromisoformat(eff)
            except ValueError:
                self.err(_join(path, "effective"), f"{eff!r} is not a date (YYYY-MM-DD)")
        elif eff is not None:
            self.err(_join(path, "effective"), f"expected a date (YYYY-MM-DD), got {eff!r}")
        basis = self.text(t, "basis", path, default="period", choices=("period", "annual")) or "period"
        thresholds: list[int] = []
        if "thresholds" in t:
            thresholds = self.thresholds(t, path) or []
        # household
        hh_base = hh_min = 0
        per_person_raw: Any = None
        raise_raw: Any = None
        if "household" in t:
            hpath = _join(path, "household")
            h = self.table(t["household"], hpath)
            self.keys(h, hpath, {"base_size", "per_person", "min_size", "raise"})
            hh_base = self.integer(h, "base_size", hpath, 0, 1, 100)
            hh_min = self.integer(h, "min_size", hpath, 0, 1, 100)
            per_person_raw = h.get("per_person")
            raise_raw = h.get("raise")
            if (per_person_raw is None) != (hh_base == 0):
                self.err(hpath, "base_size and per_person go together")
            if (raise_raw is None) != (hh_min == 0):
                self.err(hpath, "min_size and raise go together")
        # components
        comps_raw = t.get("components", [])
        components: list[Component] = []
        if not isinstance(comps_raw, list) or not comps_raw:
            if "components" in t or "heating" not in t:
                self.err(_join(path, "components"), "expected one or more [[versions.components]] tables"
                         " (only an area-based heating version may have none)")
        else:
            codes = set()
            for i, c in enumerate(comps_raw):
                comp = self.component(c, f"{path}.components[{i}]", thresholds, minor, per_person_raw, raise_raw,
                                      _join(path, "household"))
                if comp is not None:
                    if comp.code in codes:
                        self.err(f"{path}.components[{i}].code", f"component {comp.code!r} appears twice")
                    codes.add(comp.code)
                    components.append(comp)
        if (per_person_raw is not None or raise_raw is not None) and not any(c.tiered for c in components):
            self.err(_join(path, "household"), "a household rule needs a tiered component")
        # fixed charges
        fixed_sizes: dict[str, int] = {}
        fixed_default = None
        fixed_tax = 0
        if "fixed" in t:
            fpath = _join(path, "fixed")
            f = self.table(t["fixed"], fpath)
            self.keys(f, fpath, {"sizes", "default", "tax_rate"})
            sizes = self.table(f.get("sizes", {}), _join(fpath, "sizes"))
            for size, price in sizes.items():
                if not re.fullmatch(r"[A-Za-z0-9_-]{1,16}", size):
                    self.err(_join(_join(fpath, "sizes"), size), "a meter size is like DN15")
                value = self.scaled(price, _join(_join(fpath, "sizes"), size), money.charge_units, minor)
                if value is not None:
                    fixed_sizes[size] = value
            if "default" in f:
                fixed_default = self.scaled(f["default"], _join(fpath, "default"), money.charge_units, minor)
            if not sizes and "default" not in f:
                self.err(fpath, "give sizes, a default, or both")
            fixed_tax = self.tax(f, fpath)
        minimum = None
        minimum_tax = 0
        if "minimum" in t:
            mpath = _join(path, "minimum")
            m = self.table(t["minimum"], mpath)
            self.keys(m, mpath, {"amount", "tax_rate"}, {"amount"})
            if "amount" in m:
                minimum = self.scaled(m["amount"], _join(mpath, "amount"), money.charge_units, minor)
            minimum_tax = self.tax(m, mpath)
            if not any(c.minimum for c in components):
                self.err(mpath, "no component counts towards the minimum (minimum = true)")
        heating = None
        if "heating" in t:
            hpath = _join(path, "heating")
            h = self.table(t["heating"], hpath)
            self.keys(h, hpath, {"price", "season_start", "season_end", "tax_rate"},
                      {"price", "season_start", "season_end"})
            price = self.scaled(h["price"], _join(hpath, "price"), money.price_units, minor) if "price" in h else None
            start = self.month_day(h, "season_start", hpath, None)
            end = self.month_day(h, "season_end", hpath, None)
            tax = self.tax(h, hpath)
            if price is not None and start and end:
                if start == end:
                    self.err(hpath, "season_start and season_end must differ")
                heating = Heating(price, start, end, tax)
        if len(self.problems) > before or effective is None:
            return None
        return Version(tariff_id=tid, effective=effective, basis=basis, components=tuple(components),
                       household_base=hh_base, household_min=hh_min, fixed_sizes=fixed_sizes,
                       fixed_default=fixed_default, fixed_tax_ppm=fixed_tax, minimum=minimum,
                       minimum_tax_ppm=minimum_tax, heating=heating)

    def thresholds(self, t: Mapping[str, Any], path: str) -> list[int] | None:
        values = self.scaled_list(t, "thresholds", path, money.threshold_litres)
        if values is None:
            return None
        if any(v <= 0 for v in values) or any(b <= a for a, b in zip(values, values[1:])):
            self.err(_join(path, "thresholds"), "thresholds must be positive and strictly increasing")
            return None
        if len(values) > 15:
            self.err(_join(path, "thresholds"), "at most 15 thresholds")
            return None
        return values

    def tax(self, t: Mapping[str, Any], path: str) -> int:
        if "tax_rate" not in t:
            return 0
        value = self.scaled(t["tax_rate"], _join(path, "tax_rate"), money.tax_ppm)
        return 0 if value is None else value

    def per_threshold(self, raw: Any, n: int, path: str) -> tuple[int, ...] | None:
        if raw is None:
            return (0,) * n
        if isinstance(raw, list):
            if len(raw) != n:
                self.err(path, f"gives {len(raw)} values for {n} thresholds")
                return None
            vals = [self.scaled(v, f"{path}[{i}]", money.threshold_litres) for i, v in enumerate(raw)]
            return None if any(v is None for v in vals) else tuple(vals)  # type: ignore[arg-type]
        one = self.scaled(raw, path, money.threshold_litres)
        return None if one is None else (one,) * n

    def component(self, raw: Any, path: str, version_thresholds: list[int], minor: int,
                  per_person_raw: Any, raise_raw: Any, hpath: str) -> Component | None:
        c = self.table(raw, path)
        before = len(self.problems)
        self.keys(c, path, {"code", "price", "prices", "thresholds", "apportioned_price", "tax_rate", "minimum"},
                  {"code"})
        code = self.text(c, "code", path, pattern=_CODE)
        if code in _RESERVED:
            self.err(_join(path, "code"), f"{code!r} is reserved for {code} lines")
        thresholds: list[int] = []
        if "price" in c and "prices" in c:
            self.err(path, "give price (flat) or prices (tiered), not both")
        elif "price" in c:
            if "thresholds" in c:
                self.err(_join(path, "thresholds"), "a flat component (price) has no thresholds")
            price = self.scaled(c["price"], _join(path, "price"), money.price_units, minor)
            prices = [] if price is None else [price]
        elif "prices" in c:
            thresholds = (self.thresholds(c, path) or []) if "thresholds" in c else list(version_thresholds)
            prices = self.scaled_list(c, "prices", path, money.price_units, minor) or []
            if not thresholds:
                self.err(_join(path, "prices"), "tiered prices need thresholds (on the version or the component)")
            elif prices and len(prices) != len(thresholds) + 1:
                self.err(_join(path, "prices"),
                         f"{len(prices)} prices for {len(thresholds)} thresholds (need {len(thresholds) + 1})")
        else:
            self.err(path, "give price (flat) or prices (tiered)")
            prices = []
        app = None
        if "apportioned_price" in c:
            app = self.scaled(c["apportioned_price"], _join(path, "apportioned_price"), money.price_units, minor)
        tax = self.tax(c, path)
        minimum = self.boolean(c, "minimum", path, True)
        n = len(thresholds)
        per_person = self.per_threshold(per_person_raw if thresholds else None, n, _join(hpath, "per_person"))
        raise_ = self.per_threshold(raise_raw if thresholds else None, n, _join(hpath, "raise"))
        if len(self.problems) > before or code is None or not prices or per_person is None or raise_ is None:
            return None
        return Component(code=code, thresholds=tuple(thresholds), prices=tuple(prices),
                         apportioned_price=prices[0] if app is None else app, tax_ppm=tax, minimum=minimum,
                         per_person=per_person, raise_=raise_)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
