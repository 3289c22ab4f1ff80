"""Checks for what people type into forms and API calls: length limits, no control characters, and
the few shapes (user names, e-mail addresses, dates) the web UI accepts. Messages say what to fix."""

from __future__ import annotations

import re
import unicodedata
from datetime import date

from webui.errors import InputError

SHORT = 200  # names, titles, one-line notes
LONG = 4000  # reasons and notes
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,189}\.[^@\s]{1,63}$")
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


def text(
    value: object, label: str, limit: int = SHORT, required: bool = True, multiline: bool = False
) -> str:
    """Trimmed text; refuses control characters (other than line breaks where multiline) and text over
    limit characters."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InputError(f"{label}: expected text")
    value = unicodedata.normalize("NFC", value.replace("\r\n", "\n")).strip()
    if required and not value:
        raise InputError(f"{label}: please fill this in")
    if len(value) > limit:
        raise InputError(f"{label}: at most {limit:,} characters, not {len(value):,}")
    allowed = "\n\t" if multiline else ""
    if any(unicodedata.category(c) in ("Cc", "Cs") and c not in allowed for c in value):
        raise InputError(f"{label}: contains control characters")
    return value


def username(value: object) -> str:
    name = text(value, "User name", 64)
    if not _USERNAME.match(name):
        raise InputError("User name: letters, digits and . _ @ - only, starting with a letter or digit")
    return name


def email(value: object) -> str:
    address = text(value, "E-mail address", 254)
    if not _EMAIL.match(address):
        raise InputError(f"E-mail address: {address!r} does not look like name@school.example")
    return address


def day(value: object, label: str) -> date:
    raw = text(value, label, 10)
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise InputError(f"{label}: {raw!r} is not a date (YYYY-MM-DD)") from None


def choice(value: object, label: str, choices: tuple[str, ...] | list[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise InputError(f"{label}: choose one of {', '.join(choices)}")
    return value
