"""Maintenance windows: when a batch may start. Pure: parsed and bounded once, then plain arithmetic on UTC.

A window is ``DAYS HH:MM-HH:MM`` in UTC, e.g. ``Mon-Fri 22:00-06:00`` (it may cross midnight: it belongs to
the day it starts on), ``Sat,Sun 00:00-24:00``, or ``daily 01:00-05:00``. Without windows, any time is fine.
A batch that has started finishes even when its window closes; only starting waits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vmssctl.errors import UsageError
from vmssctl.inputs import shown

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# ASCII only, matched whole: a Python ``\d`` takes other scripts' digits, ``\s`` a newline, ``$`` a trailing one
_WINDOW = re.compile(r"[ ]*([A-Za-z,-]+)[ ]+([0-9]{2}):([0-9]{2})[ ]*-[ ]*([0-9]{2}):([0-9]{2})[ ]*")
MAX_WINDOWS = 20


@dataclass(frozen=True)
class Window:
    days: frozenset[int]  # 0 = Monday
    start: int  # minutes after midnight UTC
    minutes: int  # how long it lasts (1 to 1,440)

    def opens(self, day_start: float) -> float:
        return day_start + self.start * 60


def parse(text: str) -> Window:
    m = _WINDOW.fullmatch(text) if isinstance(text, str) and len(text) <= 100 else None
    if not m:
        raise UsageError(f"window '{shown(text)}' is not DAYS HH:MM-HH:MM (UTC), e.g. 'Mon-Fri 22:00-06:00' or "
                         "'daily 01:00-05:00'")
    days_text, h1, m1, h2, m2 = m.groups()
    days: set[int] = set()
    for part in days_text.lower().split(","):
        if part == "daily":
            days |= set(range(7))
        elif "-" in part and all(p in DAYS for p in part.split("-", 1)):
            a, b = (DAYS.index(p) for p in part.split("-", 1))
            days |= {(a + k) % 7 for k in range((b - a) % 7 + 1)}
        elif part in DAYS:
            days.add(DAYS.index(part))
        else:
            raise UsageError(f"window '{text}': '{part}' is not a day (Mon..Sun, a range Mon-Fri, or daily)")
    if start_end_same(h1, m1, h2, m2):
        raise UsageError(f"window '{text}' starts when it ends: write 00:00-24:00 for a whole day")
    start, end = int(h1) * 60 + int(m1), int(h2) * 60 + int(m2)
    if int(h1) > 23 or int(m1) > 59 or int(h2) > 24 or int(m2) > 59 or (int(h2) == 24 and int(m2)):
        raise UsageError(f"window '{text}': times are HH:MM from 00:00 to 24:00")
    minutes = (end - start) % 1440 or 1440
    return Window(frozenset(days), start, minutes)


def start_end_same(h1: str, m1: str, h2: str, m2: str) -> bool:
    """``10:00-10:00`` is no window, or a whole day: ambiguous, so refused (00:00-24:00 says a whole day)."""
    return (int(h1) * 60 + int(m1)) % 1440 == (int(h2) * 60 + int(m2)) % 1440 and not (h1 == "00" and m1 == "00"
                                                                                      and h2 == "24")


def parse_all(items: object, flag: str = "--window") -> tuple[str, ...]:
    """The windows as given (kept as text in the policy), each checked; at most 20."""
    values = [items] if isinstance(items, str) else items
    if not isinstance(values, list | tuple) or len(values) > MAX_WINDOWS:
        raise UsageError(f"{flag}: at most {MAX_WINDOWS} windows such as 'Mon-Fri 22:00-06:00'")
    for v in values:
        parse(v)
    return tuple(values)


def _day_start(t: float) -> float:
    return t - t % 86400


def _weekday(day_start: float) -> int:
    return (int(day_start // 86400) + 3) % 7  # 1970-01-01 was a Thursday


def is_open(windows: tuple[str, ...], t: float) -> bool:
    """May a batch start at ``t`` (epoch seconds)? Always, without windows."""
    if not windows:
        return True
    for w in map(parse, windows):
        for back in (0, 1):  # opened today, or yesterday and still open across midnight
            day = _day_start(t) - back * 86400
            if _weekday(day) in w.days and w.opens(day) <= t < w.opens(day) + w.minutes * 60:
                return True
    return False


def next_open(windows: tuple[str, ...], t: float) -> float:
    """When the next window opens at or after ``t`` (``t`` itself when one is open)."""
    if is_open(windows, t):
        return t
    starts = [w.opens(_day_start(t) + k * 86400) for w in map(parse, windows) for k in range(8)
              if _weekday(_day_start(t) + k * 86400) in w.days]
    return min(s for s in starts if s >= t)
