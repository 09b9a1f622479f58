"""Kubernetes resource quantities: strict parsing with messages users can act on."""

from __future__ import annotations

import math
import re

from .errors import InvalidOptions

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50}
_DECIMAL = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15}
_MEMORY_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$")
_CPU_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m?)$")
_MAX_LEN = 32


def _text(value: object, what: str) -> str:
    if isinstance(value, bool) or value is None:
        raise InvalidOptions(f"{what}: expected a quantity, got {value!r}.")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise InvalidOptions(f"{what}: {value!r} is not a finite number.")
        return repr(value) if isinstance(value, float) else str(value)
    if not isinstance(value, str):
        raise InvalidOptions(f"{what}: expected a quantity, got {type(value).__name__}.")
    if len(value) > _MAX_LEN:
        raise InvalidOptions(f"{what}: value is too long to be a quantity.")
    return value.strip()


def parse_memory(value: object, what: str = "memory") -> int:
    """Bytes from ``"2Gi"``, ``"512Mi"``, ``"2G"``, ``2147483648``; refuse ``"2GB"``, ``"lots"``."""
    text = _text(value, what)
    m = _MEMORY_RE.match(text)
    if not m:
        hint = ""
        if re.match(r"^[0-9.]+\s*[kKmMgGtT][bB]$", text):
            unit = text[:-1].rstrip()
            hint = f" Kubernetes units have no 'B': use {unit}i (binary) or {unit.upper()} (decimal)."
        raise InvalidOptions(f"{what}: {text!r} is not a memory quantity; use e.g. 512Mi, 2Gi or 4G.{hint}")
    number, unit = float(m.group(1)), m.group(2) or ""
    factor = _BINARY.get(unit) or _DECIMAL[unit]
    result = int(number * factor)
    if result <= 0:
        raise InvalidOptions(f"{what}: must be more than zero, got {text!r}.")
    return result


def parse_cpu(value: object, what: str = "cpu") -> int:
    """Millicores from ``"500m"``, ``"2"``, ``1.5``; refuse negatives and words."""
    text = _text(value, what)
    m = _CPU_RE.match(text)
    if not m:
        raise InvalidOptions(f"{what}: {text!r} is not a CPU quantity; use e.g. 500m, 1 or 2.5.")
    number = float(m.group(1))
    millis = int(round(number if m.group(2) else number * 1000))
    if millis <= 0:
        raise InvalidOptions(f"{what}: must be more than zero, got {text!r}.")
    return millis


def parse_count(value: object, what: str, *, minimum: int = 0) -> int:
    """A whole number, from an int or a string of digits (form fields are strings)."""
    if isinstance(value, bool):
        raise InvalidOptions(f"{what}: expected a whole number, got {value!r}.")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]{1,6}\s*", value):
        number = int(value)
    else:
        shown = value if isinstance(value, (str, int, float)) else type(value).__name__
        raise InvalidOptions(f"{what}: expected a whole number, got {str(shown)[:40]!r}.")
    if number < minimum:
        raise InvalidOptions(f"{what}: must be at least {minimum}, got {number}.")
    return number


def format_memory(num_bytes: int) -> str:
    """The shortest exact binary-unit rendering (``2Gi``), else bytes."""
    for unit in ("Ti", "Gi", "Mi", "Ki"):
        factor = _BINARY[unit]
        if num_bytes % factor == 0:
            return f"{num_bytes // factor}{unit}"
    return str(num_bytes)


def format_cpu(millis: int) -> str:
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"
