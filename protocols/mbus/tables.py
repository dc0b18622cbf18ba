"""EN 13757-3 code tables as data: VIFs (primary, FD and FB extension tables), combinable VIFEs,
media, application error codes and the fixed-data (CI 0x73) unit codes.

Quantity and unit names follow the wording the field uses (and that libmbus prints in its
normalised output, so decodes compare one to one): ``Volume`` in ``m^3``, ``Energy`` in ``Wh``
or ``J``, durations in ``s``. ``exp`` is the power of ten the raw value is scaled by; ``mult``
an exact integer factor (minutes, hours and days become seconds). Months and years stay in
their own unit (their length in seconds is not fixed).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class VifInfo:
    quantity: str
    unit: str
    exp: int = 0  #: value = raw × 10**exp × mult
    mult: int = 1
    kind: str = "number"  #: number | date | id | text | manufacturer | any | reserved


# kinds: "date" = a time point (data type G/F/I/J chosen by the data length);
# "id" = an identifier or code kept as the integer/BCD/string sent (never scaled);
# "manufacturer" = meaning defined by the manufacturer; "reserved" = code reserved by the standard.

_DURATION_MULT = (1, 60, 3600, 86400)  # nn = seconds, minutes, hours, days
_LONG_MULT = (3600, 86400)  # pp = hours, days (then months, years)


def _span(table: dict[int, VifInfo], start: int, count: int, quantity: str, unit: str, exp0: int) -> None:
    for n in range(count):
        table[start + n] = VifInfo(quantity, unit, exp0 + n)


def _durations(table: dict[int, VifInfo], start: int, quantity: str) -> None:
    for n, mult in enumerate(_DURATION_MULT):
        table[start + n] = VifInfo(quantity, "s", 0, mult)


def _long_durations(table: dict[int, VifInfo], start: int, quantity: str) -> None:
    table[start] = VifInfo(quantity, "s", 0, 3600)
    table[start + 1] = VifInfo(quantity, "s", 0, 86400)
    table[start + 2] = VifInfo(quantity, "month")
    table[start + 3] = VifInfo(quantity, "year")


RESERVED = VifInfo("Reserved", "Reserved", kind="reserved")

# --- primary VIF table (VIF & 0x7F) ------------------------------------------------------------
PRIMARY: dict[int, VifInfo] = {}
_span(PRIMARY, 0x00, 8, "Energy", "Wh", -3)
_span(PRIMARY, 0x08, 8, "Energy", "J", 0)
_span(PRIMARY, 0x10, 8, "Volume", "m^3", -6)
_span(PRIMARY, 0x18, 8, "Mass", "kg", -3)
_durations(PRIMARY, 0x20, "On time")
_durations(PRIMARY, 0x24, "Operating time")
_span(PRIMARY, 0x28, 8, "Power", "W", -3)
_span(PRIMARY, 0x30, 8, "Power", "J/h", 0)
_span(PRIMARY, 0x38, 8, "Volume flow", "m^3/h", -6)
_span(PRIMARY, 0x40, 8, "Volume flow", "m^3/min", -7)
_span(PRIMARY, 0x48, 8, "Volume flow", "m^3/s", -9)
_span(PRIMARY, 0x50, 8, "Mass flow", "kg/h", -3)
_span(PRIMARY, 0x58, 4, "Flow temperature", "°C", -3)
_span(PRIMARY, 0x5C, 4, "Return temperature", "°C", -3)
_span(PRIMARY, 0x60, 4, "Temperature difference", "K", -3)
_span(PRIMARY, 0x64, 4, "External temperature", "°C", -3)
_span(PRIMARY, 0x68, 4, "Pressure", "bar", -3)
PRIMARY[0x6C] = VifInfo("Time point (date)", "-", kind="date")
PRIMARY[0x6D] = VifInfo("Time point (date & time)", "-", kind="date")
PRIMARY[0x6E] = VifInfo("H.C.A.", "Units for H.C.A.")
PRIMARY[0x6F] = RESERVED
_durations(PRIMARY, 0x70, "Averaging Duration")
_durations(PRIMARY, 0x74, "Actuality Duration")
PRIMARY[0x78] = VifInfo("Fabrication No", "", kind="id")
PRIMARY[0x79] = VifInfo("(Enhanced) Identification", "", kind="id")
PRIMARY[0x7A] = VifInfo("Bus Address", "", kind="id")
PRIMARY[0x7E] = VifInfo("Any VIF", "", kind="any")
PRIMARY[0x7F] = VifInfo("Manufacturer specific", "", kind="manufacturer")

# --- first extension table, after VIF 0xFD (VIFE & 0x7F) -----------------------------------------
EXT_FD: dict[int, VifInfo] = {}
_span(EXT_FD, 0x00, 4, "Credit", "Currency units", -3)
_span(EXT_FD, 0x04, 4, "Debit", "Currency units", -3)
for _code, _name in {
    0x08: "Access Number (transmission count)", 0x09: "Medium (as in fixed header)",
    0x0A: "Manufacturer (as in fixed header)", 0x0B: "Parameter set identification",
    0x0C: "Model / Version", 0x0D: "Hardware version", 0x0E: "Firmware version",
    0x0F: "Software version", 0x10: "Customer location", 0x11: "Customer",
    0x12: "Access Code User", 0x13: "Access Code Operator", 0x14: "Access Code System Operator",
    0x15: "Access Code Developer", 0x16: "Password", 0x17: "Error flags", 0x18: "Error mask",
    0x1A: "Digital Output", 0x1B: "Digital Input", 0x1E: "Retry",
    0x20: "First storage # for cyclic storage", 0x21: "Last storage # for cyclic storage",
    0x22: "Size of storage block", 0x60: "Reset counter", 0x61: "Cumulation counter",
    0x62: "Control signal", 0x63: "Day of week", 0x64: "Week number",
    0x65: "Time point of day change", 0x66: "State of parameter activation",
    0x67: "Special supplier information", 0x73: "Listening window management",
    0x75: "Number of times the meter was stopped",
    0x76: "Data container for manufacturer specific protocol",
}.items():
    EXT_FD[_code] = VifInfo(_name, "", kind="id")
EXT_FD[0x1C] = VifInfo("Baudrate", "Baud")
EXT_FD[0x1D] = VifInfo("Response delay time", "Bittimes")
_durations(EXT_FD, 0x24, "Storage interval")
EXT_FD[0x28] = VifInfo("Storage interval", "month")
EXT_FD[0x29] = VifInfo("Storage interval", "year")
EXT_FD[0x2B] = VifInfo("Time point (second)", "s")
_durations(EXT_FD, 0x2C, "Duration since last readout")
EXT_FD[0x30] = VifInfo("Start (date/time) of tariff", "-", kind="date")
for _n, _mult in enumerate(_DURATION_MULT[1:], start=1):
    EXT_FD[0x30 + _n] = VifInfo("Duration of tariff", "s", 0, _mult)
_durations(EXT_FD, 0x34, "Period of tariff")
EXT_FD[0x38] = VifInfo("Period of tariff", "month")
EXT_FD[0x39] = VifInfo("Period of tariff", "year")
EXT_FD[0x3A] = VifInfo("Dimensionless", "")
_span(EXT_FD, 0x40, 16, "Voltage", "V", -9)
_span(EXT_FD, 0x50, 16, "Current", "A", -12)
_long_durations(EXT_FD, 0x68, "Duration since last cumulation")
_long_durations(EXT_FD, 0x6C, "Operating time battery")
EXT_FD[0x70] = VifInfo("Date and time of battery change", "-", kind="date")
EXT_FD[0x71] = VifInfo("RF level", "dBm")
EXT_FD[0x72] = VifInfo("Daylight saving", "", kind="id")
EXT_FD[0x74] = VifInfo("Remaining battery life time", "s", 0, 86400)

# --- second extension table, after VIF 0xFB ------------------------------------------------------
EXT_FB: dict[int, VifInfo] = {}
_span(EXT_FB, 0x00, 2, "Energy", "Wh", 5)  # 0.1 MWh, 1 MWh
_span(EXT_FB, 0x08, 2, "Energy", "J", 8)  # 0.1 GJ, 1 GJ
_span(EXT_FB, 0x10, 2, "Volume", "m^3", 2)  # 100 m³, 1000 m³
_span(EXT_FB, 0x18, 2, "Mass", "kg", 5)  # 100 t, 1000 t
EXT_FB[0x21] = VifInfo("Volume", "feet^3", -1)
_span(EXT_FB, 0x22, 2, "Volume", "American gallon", -1)
EXT_FB[0x24] = VifInfo("Volume flow", "American gallon/min", -3)
EXT_FB[0x25] = VifInfo("Volume flow", "American gallon/min", 0)
EXT_FB[0x26] = VifInfo("Volume flow", "American gallon/h", 0)
_span(EXT_FB, 0x28, 2, "Power", "W", 5)  # 0.1 MW, 1 MW
_span(EXT_FB, 0x30, 2, "Power", "J/h", 8)  # 0.1 GJ/h, 1 GJ/h
_span(EXT_FB, 0x58, 4, "Flow temperature", "°F", -3)
_span(EXT_FB, 0x5C, 4, "Return temperature", "°F", -3)
_span(EXT_FB, 0x60, 4, "Temperature difference", "°F", -3)
_span(EXT_FB, 0x64, 4, "External temperature", "°F", -3)
_span(EXT_FB, 0x70, 4, "Cold / Warm Temperature Limit", "°F", -3)
_span(EXT_FB, 0x74, 4, "Cold / Warm Temperature Limit", "°C", -3)
_span(EXT_FB, 0x78, 8, "Cumul count max power", "W", -3)

# --- combinable (orthogonal) VIFEs (VIFE & 0x7F) ---------------------------------------------
#: record error codes a slave puts in the first VIFE (E00x xxxx)
RECORD_ERRORS = {
    0x00: "none", 0x01: "too many DIFEs", 0x02: "storage number not implemented",
    0x03: "unit number not implemented", 0x04: "tariff number not implemented",
    0x05: "function not implemented", 0x06: "data class not implemented",
    0x07: "data size not implemented", 0x0B: "too many VIFEs", 0x0C: "illegal VIF group",
    0x0D: "illegal VIF exponent", 0x0E: "VIF/DIF mismatch", 0x0F: "unimplemented action",
    0x15: "no data available (undefined value)", 0x16: "data overflow", 0x17: "data underflow",
    0x18: "data error", 0x1C: "premature end of record",
}

COMBINABLE: dict[int, str] = {
    0x20: "per second", 0x21: "per minute", 0x22: "per hour", 0x23: "per day", 0x24: "per week",
    0x25: "per month", 0x26: "per year", 0x27: "per revolution / measurement",
    0x28: "increment per input pulse on input channel 0",
    0x29: "increment per input pulse on input channel 1",
    0x2A: "increment per output pulse on output channel 0",
    0x2B: "increment per output pulse on output channel 1",
    0x2C: "per litre", 0x2D: "per m3", 0x2E: "per kg", 0x2F: "per K", 0x30: "per kWh",
    0x31: "per GJ", 0x32: "per kW", 0x33: "per (K*l)", 0x34: "per V", 0x35: "per A",
    0x36: "multiplied by s", 0x37: "multiplied by s / V", 0x38: "multiplied by s / A",
    0x39: "start date(/time) of", 0x3A: "VIF contains uncorrected unit",
    0x3B: "accumulation only if positive contributions",
    0x3C: "accumulation of abs value only if negative contributions",
    0x3D: "non-metric unit", 0x3E: "value at base conditions", 0x3F: "OBIS declaration",
    0x40: "lower limit value", 0x48: "upper limit value",
    0x41: "number of exceeds of lower limit", 0x49: "number of exceeds of upper limit",
    0x7E: "future value", 0x7F: "manufacturer specific",
}
for _u, _lim in ((0, "lower"), (8, "upper")):
    for _f, _fl in ((0, "first"), (4, "last")):
        for _b, _be in ((0, "begin"), (1, "end")):
            COMBINABLE[0x42 | _u | _f | _b] = f"date (/time) of {_be} of {_fl} {_lim} limit exceed"
        for _nn, _unit in enumerate(("s", "min", "h", "d")):
            COMBINABLE[0x50 | _u | _f | _nn] = f"duration of {_fl} {_lim} limit exceed ({_unit})"
for _f, _fl in ((0, "first"), (4, "last")):
    for _nn, _unit in enumerate(("s", "min", "h", "d")):
        COMBINABLE[0x60 | _f | _nn] = f"duration of {_fl} ({_unit})"
    for _b, _be in ((0, "begin"), (1, "end")):
        COMBINABLE[0x6A | _f | _b] = f"date (/time) of {_fl} {_be}"
COMBINABLE[0x68] = "value during lower value limit exceed"
COMBINABLE[0x6C] = "value during upper value limit exceed"
COMBINABLE[0x69] = "leakage values"
COMBINABLE[0x6D] = "overflow values"
for _n in range(8):
    COMBINABLE[0x70 + _n] = f"multiplicative correction factor 1e{_n - 6}"
for _n in range(4):
    COMBINABLE[0x78 + _n] = f"additive correction constant 1e{_n - 3} x unit of VIF"
COMBINABLE[0x7D] = "multiplicative correction factor 1e3"
COMBINABLE[0x7C] = "extension of combinable VIFE"

#: combinable VIFEs whose record value is a time point (decoded as a date / date-time)
DATE_VIFES = frozenset({0x39} | {0x42 | u | f | b for u in (0, 8) for f in (0, 4) for b in (0, 1)}
                       | {0x6A | f | b for f in (0, 4) for b in (0, 1)})

#: media (device types) of the variable data header
MEDIA = {
    0x00: "Other", 0x01: "Oil", 0x02: "Electricity", 0x03: "Gas", 0x04: "Heat: Outlet",
    0x05: "Steam", 0x06: "Warm water (30-90°C)", 0x07: "Water", 0x08: "Heat Cost Allocator",
    0x09: "Compressed Air", 0x0A: "Cooling load meter: Outlet", 0x0B: "Cooling load meter: Inlet",
    0x0C: "Heat: Inlet", 0x0D: "Heat / Cooling load meter", 0x0E: "Bus/System", 0x0F: "Unknown Medium",
    0x10: "Irrigation water", 0x11: "Water data logger", 0x12: "Gas data logger",
    0x13: "Gas converter", 0x14: "Calorific value", 0x15: "Hot water (>=90°C)",
    0x16: "Cold water", 0x17: "Dual register (hot/cold) water", 0x18: "Pressure",
    0x19: "A/D Converter", 0x1A: "Smoke detector", 0x1B: "Room sensor", 0x1C: "Gas detector",
    0x20: "Breaker (electricity)", 0x21: "Valve (gas or water)", 0x25: "Customer unit (display device)",
    0x28: "Waste water", 0x29: "Garbage", 0x2A: "Carbon dioxide", 0x31: "Communication controller",
    0x32: "Unidirectional repeater", 0x33: "Bidirectional repeater", 0x36: "Radio converter (system side)",
    0x37: "Radio converter (meter side)", 0x38: "Wired adapter",
}

#: application error codes a slave sends with CI 0x70
APPLICATION_ERRORS = {
    0: "Unspecified error", 1: "Unimplemented CI-Field", 2: "Buffer too long, truncated",
    3: "Too many records", 4: "Premature end of record", 5: "More than 10 DIFE's",
    6: "More than 10 VIFE's", 7: "Reserved", 8: "Application busy", 9: "Too many readouts",
}

#: what other CI fields are (for a clear rejection of frames that are not data responses)
OTHER_CI = {
    0x50: "application reset (master to slave)", 0x51: "data send (master to slave)",
    0x52: "selection of slaves (master to slave)", 0x54: "synchronize action (master to slave)",
    0x5A: "command with short transport header (master to slave)",
    0x5B: "command with long transport header (master to slave)",
    0x71: "alarm status report", 0x74: "alarm with short header", 0x75: "alarm with long header",
    0x8A: "acknowledge with short header", 0x8B: "acknowledge with long header",
    0x8C: "extended link layer (wireless)", 0x8D: "extended link layer (wireless)",
    0x90: "authentication and fragmentation layer", 0xB1: "set baud rate", 0xB8: "set baud rate to 300",
    0xB9: "set baud rate to 600", 0xBA: "set baud rate to 1200", 0xBB: "set baud rate to 2400",
    0xBC: "set baud rate to 4800", 0xBD: "set baud rate to 9600", 0xBE: "set baud rate to 19200",
    0xBF: "set baud rate to 38400",
}

#: EN 1434-3 fixed data structure units (6 bits): (quantity, unit, exp)
FIXED_UNITS: dict[int, tuple[str, str, int]] = {
    0x02: ("Energy", "Wh", 0), 0x03: ("Energy", "Wh", 1), 0x04: ("Energy", "Wh", 2),
    0x05: ("Energy", "Wh", 3), 0x06: ("Energy", "Wh", 4), 0x07: ("Energy", "Wh", 5),
    0x08: ("Energy", "Wh", 6), 0x09: ("Energy", "Wh", 7), 0x0A: ("Energy", "Wh", 8),
    0x0B: ("Energy", "J", 3), 0x0C: ("Energy", "J", 4), 0x0D: ("Energy", "J", 5),
    0x0E: ("Energy", "J", 6), 0x0F: ("Energy", "J", 7), 0x10: ("Energy", "J", 8),
    0x11: ("Energy", "J", 9), 0x12: ("Energy", "J", 10), 0x13: ("Energy", "J", 11),
    0x14: ("Power", "W", 0), 0x15: ("Power", "W", 1), 0x16: ("Power", "W", 2),
    0x17: ("Power", "W", 3), 0x18: ("Power", "W", 4), 0x19: ("Power", "W", 5),
    0x1A: ("Power", "W", 6), 0x1B: ("Power", "W", 7), 0x1C: ("Power", "W", 8),
    0x29: ("Volume", "m^3", -3), 0x2A: ("Volume", "m^3", -2), 0x2B: ("Volume", "m^3", -1),
    0x2C: ("Volume", "m^3", 0), 0x2D: ("Volume", "m^3", 1), 0x2E: ("Volume", "m^3", 2),
}
FIXED_MEDIA = {
    0x00: "Other", 0x01: "Oil", 0x02: "Electricity", 0x03: "Gas", 0x04: "Heat", 0x05: "Steam",
    0x06: "Hot Water", 0x07: "Water", 0x08: "H.C.A.", 0x09: "Reserved", 0x0A: "Gas Mode 2",
    0x0B: "Heat Mode 2", 0x0C: "Hot Water Mode 2", 0x0D: "Water Mode 2", 0x0E: "H.C.A. Mode 2",
    0x0F: "Reserved",
}


def manufacturer_code(value: int) -> str:
    """The three-letter FLAG code of a 15-bit manufacturer id (``0x1596`` → ``"EFE"``)."""
    return "".join(chr(((value >> shift) & 0x1F) + 64) for shift in (10, 5, 0))


def manufacturer_id(code: str) -> int:
    """Inverse of :func:`manufacturer_code`."""
    a, b, c = (ord(ch.upper()) - 64 for ch in code)
    return (a << 10) | (b << 5) | c
