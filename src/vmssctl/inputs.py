"""Every value a user hands vmssctl, parsed and bounded where it comes in.

The CLI, the policy TOML and the dashboard's forms all go through these functions, so a
value is refused the same way wherever it is typed: one line naming the flag, exit 2,
nothing written. Digits are ASCII only (``int()`` would take fullwidth or Arabic-Indic
digits, which Azure would not), patterns are matched whole (``$`` in a Python regex
also matches before a trailing newline), and every number has an upper bound.
"""

from __future__ import annotations

import math
import os
import re
import stat
from pathlib import Path

from vmssctl.errors import UsageError

INT32_MAX = 2**31 - 1  # Azure's image version parts are 32-bit integers
MAX_INSTANCES = 1000  # a scale set holds at most 1,000 VMs
MAX_DURATION = 7 * 24 * 3600.0  # no wait in a rollout is longer than a week
MAX_TEXT = 2048  # longest free-text value (URL template, hook command)
MAX_POLICY_BYTES = 64 * 1024  # a rollout policy is a few lines of TOML

_DIGITS = re.compile(r"[0-9]{1,10}")
_VERSION = re.compile(r"([0-9]{1,10})\.([0-9]{1,10})\.([0-9]{1,10})")
_NUMBER = re.compile(r"[0-9]{1,10}(?:\.[0-9]{1,6})?")
_DURATION = re.compile(r"(?:([0-9]{1,6})h)?(?:([0-9]{1,6})m)?(?:([0-9]{1,7}(?:\.[0-9]{1,6})?)s)?")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def one_line(text: str) -> str:
    """``text`` made safe to print as one line: control and other unprintable characters escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def shown(value: object) -> str:
    """A value as it may be quoted in an error line: printable, short."""
    text = repr(value) if not isinstance(value, str) else value
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= 40 else text[:37] + "..."


def version(value: object, flag: str = "--version") -> str:
    """``latest`` or ASCII ``Major.Minor.Build`` with each part a 32-bit integer."""
    if isinstance(value, str):
        if value.lower() == "latest":
            return "latest"
        m = _VERSION.fullmatch(value)
        if m and all(int(p) <= INT32_MAX for p in m.groups()):
            return value
    raise UsageError(f"{flag} '{shown(value)}' is not 'latest' or Major.Minor.Build with parts from 0 to "
                     f"{INT32_MAX} (e.g. 24.04.202611200)")


def name(value: object, flag: str) -> str:
    """An image publisher, offer or SKU name: ASCII letters, digits, '.', '_', '-'."""
    if isinstance(value, str) and _NAME.fullmatch(value):
        return value
    raise UsageError(f"{flag} '{shown(value)}' is not a valid name (letters, digits, '.', '_', '-'; at most 128)")


def count(value: object, flag: str, low: int = 0, high: int = MAX_INSTANCES) -> int:
    """A whole number from ``low`` to ``high``, as an int or ASCII digits."""
    n: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    elif isinstance(value, str) and _DIGITS.fullmatch(value):
        n = int(value)
    if n is None or not low <= n <= high:
        raise UsageError(f"{flag} '{shown(value)}' is not a whole number from {low} to {high}")
    return n


def percent(value: object, flag: str, low: float = 0.0, high: float = 100.0, low_open: bool = False) -> float:
    """A percentage, ``20``, ``20%`` or ``12.5``: finite, from ``low`` (exclusive if ``low_open``) to ``high``."""
    v: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        v = float(value)
    elif isinstance(value, str):
        s = value.removesuffix("%")
        if _NUMBER.fullmatch(s):
            v = float(s)
    if v is None or not math.isfinite(v) or v > high or v < low or (low_open and v == low):
        bound = f"more than {low:g}" if low_open else f"from {low:g}"
        raise UsageError(f"{flag} '{shown(value)}' is not a percentage {bound} to {high:g}")
    return v


def duration(value: object, flag: str, high: float = MAX_DURATION) -> float:
    """``90``, ``90s``, ``2m``, ``1h30m``, ``PT2M`` → seconds, from 0 to ``high``."""
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and len(value) <= 32:
        s = value.lower()
        if _NUMBER.fullmatch(s):
            seconds = float(s)
        else:
            s = s.removeprefix("pt")
            m = _DURATION.fullmatch(s)
            if s and m:
                h, mi, sec = m.groups()
                seconds = int(h or 0) * 3600 + int(mi or 0) * 60 + float(sec or 0)
    if seconds is None or not math.isfinite(seconds) or not 0 <= seconds <= high:
        raise UsageError(f"{flag} '{shown(value)}' is not a duration such as 30s, 2m or 1h30m "
                         f"(at most {high / 3600:g}h)")
    return seconds


_VM_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")  # a Flexible set's VM, named by its name


def instance_ids(value: object, flag: str = "--instances") -> tuple[str, ...]:
    """``3,7,9`` (or a list): distinct ASCII instance ids (a Uniform set's numbers, or a Flexible set's VM names
    such as web_1a2b3c4d), at least one, at most 1,000."""
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, list | tuple) else None
    if items is None:
        raise UsageError(f"{flag} must be instance ids such as 3,7,9")
    out: list[str] = []
    for item in items:
        text = str(item).strip(" ") if isinstance(item, str | int) and not isinstance(item, bool) else None
        if text is not None and _VM_NAME.fullmatch(text) and not text.endswith("."):
            if text not in out:
                out.append(text)
            continue
        if text is None or not _DIGITS.fullmatch(text) or int(text) > INT32_MAX:
            raise UsageError(f"{flag}: '{shown(item)}' is not an instance id (use e.g. 3,7,9, or a Flexible set's "
                             "VM names)")
        text = str(int(text))
        if text not in out:
            out.append(text)
    if not out:
        raise UsageError(f"{flag} is empty: name at least one instance id (e.g. 3,7,9), or leave the flag out "
                         "for every instance")
    if len(out) > MAX_INSTANCES:
        raise UsageError(f"{flag} names {len(out)} instances; a scale set has at most {MAX_INSTANCES}")
    return tuple(out)


def text(value: object, flag: str, high: int = MAX_TEXT) -> str:
    """Free text (a URL template, a command): non-empty, one line, at most ``high`` characters."""
    if not isinstance(value, str) or not value.strip() or len(value) > high or \
            any(c in value for c in "\r\n\0"):
        raise UsageError(f"{flag} must be one non-empty line of at most {high} characters")
    return value


def label(value: object, flag: str, high: int = 100) -> str:
    """A name a person reads (a fleet's, a stage's): free text, every character printable, so that a name can
    never drive the terminal it is printed on (an escape sequence that clears the screen, say)."""
    out = text(value, flag, high)
    if not all(c.isprintable() for c in out):
        raise UsageError(f"{flag} '{shown(out)}' holds control characters: use printable text")
    return out


def database_url(value: object, flag: str = "--database") -> str:
    """The fleets' DBOS database: ``sqlite:///PATH`` or ``postgresql://…``, one line of at most 1,000 characters."""
    url = text(value, flag, 1000)
    if not url.startswith(("sqlite:///", "postgresql://")):
        raise UsageError(f"{flag} must be sqlite:///PATH or postgresql://…")
    return url


def journal(value: object, flag: str = "--journal") -> str:
    """The rollout journal: a SQLite file, or a ``postgresql://…`` database that workers on several machines share."""
    if isinstance(value, str) and value.startswith("postgresql://"):
        return database_url(value, flag)
    return path(value, flag)


def path(value: object, flag: str) -> str:
    """A file path given on the command line: not empty (empty never silently means 'the default')."""
    if not isinstance(value, str) or not value.strip() or "\0" in value or len(value) > 4096:
        raise UsageError(f"{flag} must name a file (an empty value is not 'the default': leave the flag out)")
    return value


def read_small_file(value: str, flag: str, limit: int = MAX_POLICY_BYTES) -> str:
    """The text of a regular, readable file of at most ``limit`` bytes (a FIFO or device would hang or flood)."""
    p = Path(path(value, flag))
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise UsageError(f"{flag} '{value}' does not exist") from None
    except OSError as e:
        raise UsageError(f"{flag} '{value}' cannot be read: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"{flag} '{value}' is not a regular file")
        if st.st_size > limit:
            raise UsageError(f"{flag} '{value}' is {st.st_size} bytes; a policy file is at most {limit}")
        data = os.read(fd, limit + 1)
    except OSError as e:
        raise UsageError(f"{flag} '{value}' cannot be read: {e.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise UsageError(f"{flag} '{value}' is over {limit} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{flag} '{value}' is not UTF-8 text") from None


# ARM's and Compute's naming rules, shared with the emulator so both refuse the same names.
_RG_NAME = re.compile(r"[-\w.()]{1,90}")  # letters or digits (Unicode), '_', '-', '.', '(', ')'
_VMSS_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62}[A-Za-z0-9_])?")


def is_resource_group_name(value: object) -> bool:
    """ARM: 1-90 letters, digits, underscores, hyphens, periods and parentheses; not ending in a period."""
    return isinstance(value, str) and bool(_RG_NAME.fullmatch(value)) and not value.endswith(".")


def is_scale_set_name(value: object) -> bool:
    """Compute: 1-64 ASCII letters, digits, '.', '_', '-'; starts with a letter or digit, ends with one or '_'."""
    return isinstance(value, str) and bool(_VMSS_NAME.fullmatch(value))


def resource_group(value: object, flag: str = "-g") -> str:
    if not is_resource_group_name(value):
        raise UsageError(f"{flag} '{shown(value)}' is not a resource group name (1-90 letters, digits, '_', '-', "
                         "'.', '(', ')'; not ending in '.')")
    return str(value)


def scale_set_name(value: object, flag: str = "-n") -> str:
    if not is_scale_set_name(value):
        raise UsageError(f"{flag} '{shown(value)}' is not a scale set name (1-64 letters, digits, '.', '_', '-'; "
                         "starting with a letter or digit)")
    return str(value)


def number(value: object, flag: str, low: float, high: float) -> float:
    """A finite decimal number from ``low`` to ``high`` (no NaN, no infinity, no exponent)."""
    v: float | None = None
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if numeric or (isinstance(value, str) and _NUMBER.fullmatch(value)):
        v = float(value)  # type: ignore[arg-type]
    if v is None or not math.isfinite(v) or not low <= v <= high:
        raise UsageError(f"{flag} '{shown(value)}' is not a number from {low:g} to {high:g}")
    return v


def subscription(value: object, flag: str = "--subscription") -> str:
    """A subscription id: a GUID as ARM writes it."""
    if isinstance(value, str) and re.fullmatch(r"[0-9A-Fa-f]{8}-([0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}", value):
        return value
    raise UsageError(f"{flag} '{shown(value)}' is not a subscription id (a GUID)")
