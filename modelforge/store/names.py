"""Model names, aliases, references (``NAME``, ``NAME:3``, ``NAME:ALIAS``) and label keys."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from modelforge.errors import InvalidNameError, UsageError, check_type
from modelforge.text import escape, truncate

NAME_RULE = "^[a-z0-9][a-z0-9._-]{0,63}$"
_NAME_RE = re.compile(NAME_RULE)
RESERVED_ALIASES = frozenset({"latest"})
# the largest version number a store gives out or accepts (fits every JSON reader's int)
MAX_VERSION = 999_999_999
# names Windows cannot use for a file or folder, with or without an extension
WINDOWS_RESERVED = frozenset(
    {"con", "prn", "aux", "nul"}
    | {f"com{i}" for i in range(1, 10)}
    | {f"lpt{i}" for i in range(1, 10)}
)


def _windows_problem(norm: str) -> str | None:
    if norm.endswith("."):
        return "it ends with '.', which Windows drops from file names"
    stem = norm.split(".", 1)[0]
    if stem in WINDOWS_RESERVED:
        return f"'{stem.upper()}' is a device name on Windows and cannot be a file name there"
    return None


def is_version_text(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` also accepts '²' and '３', which int() refuses or
    reads as another number."""
    return text.isascii() and text.isdigit()


def _suggestion(norm: str) -> str | None:
    """A valid spelling close to an invalid name ('Churn Model' -> 'churn-model')."""
    guess = re.sub(r"[^a-z0-9._-]+", "-", norm.lower()).lstrip("._-")[:64].rstrip("-")
    if guess and guess != norm and _NAME_RE.fullmatch(guess) and not guess.isdigit():
        return guess
    return None


def _check(value: str, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidNameError(f"{what} must be text")
    norm = unicodedata.normalize("NFC", value)
    if not _NAME_RE.fullmatch(norm):
        shown = truncate(escape(norm), 80) if norm else "(empty)"
        if what == "model name" and ":" in norm:
            base = truncate(escape(norm.partition(":")[0]), 64)
            raise InvalidNameError(
                f"invalid model name '{shown}': this takes a bare model NAME, not a "
                "NAME:VERSION or NAME:ALIAS reference",
                hint=f"pass '{base}'",
            )
        example = "prod" if what == "alias" else "iris-classifier"
        guess = _suggestion(norm)
        raise InvalidNameError(
            f"invalid {what} '{shown}': it must match {NAME_RULE}",
            hint="use 1-64 lowercase letters, digits, '.', '_' or '-', starting with a letter "
            f"or digit, e.g. {example}" + (f" (did you mean '{guess}'?)" if guess else ""),
        )
    problem = _windows_problem(norm)
    if problem is not None:
        raise InvalidNameError(
            f"invalid {what} '{truncate(escape(norm), 80)}': {problem}",
            hint="pick another name (stores must be portable between systems)",
        )
    return norm


def validate_name(name: str) -> str:
    """Return the NFC-normalised name, or raise InvalidNameError quoting the rule."""
    return _check(name, "model name")


def validate_alias(alias: str) -> str:
    norm = _check(alias, "alias")
    if is_version_text(norm):
        raise InvalidNameError(
            f"invalid alias '{norm}': an alias cannot be all digits (it would read as a version)",
            hint="use a word such as prod or staging",
        )
    if norm in RESERVED_ALIASES:
        raise InvalidNameError(
            f"invalid alias '{norm}': 'latest' always means the newest version",
            hint="pick another alias",
        )
    return norm


@dataclass(frozen=True)
class Ref:
    """A parsed store reference. ``selector`` is None (latest), a version, or an alias."""

    name: str
    selector: int | str | None = None

    def __str__(self) -> str:
        return self.name if self.selector is None else f"{self.name}:{self.selector}"


def parse_ref(ref: str) -> Ref:
    """Parse ``NAME``, ``NAME:VERSION``, ``NAME:ALIAS`` or ``NAME:latest``."""
    check_type(ref, str, "model", "a store reference such as 'NAME' or 'NAME:VERSION'")
    name, sep, sel = ref.partition(":")
    name = validate_name(name)
    if not sep or sel == "latest":
        return Ref(name)
    if not sel:
        raise InvalidNameError(
            f"invalid reference '{escape(ref)}': nothing follows the ':'",
            hint=f"write {name}, {name}:VERSION or {name}:ALIAS",
        )
    if is_version_text(sel):
        version = int(sel)
        if version < 1:
            raise InvalidNameError(
                f"invalid version '{sel}' in '{escape(ref)}'", hint="versions start at 1"
            )
        return Ref(name, version)
    return Ref(name, validate_alias(sel))


def validate_labels(labels: dict[str, str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in (labels or {}).items():
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,63}", key):
            raise UsageError(
                f"invalid label key '{escape(key)}'",
                hint="label keys are 1-64 letters, digits, '.', '_', '/', '-'",
                code="invalid_label",
            )
        if len(value) > 1024:
            raise UsageError(f"label '{key}' is longer than 1024 characters", code="invalid_label")
        out[key] = value
    return out


def check_version_number(version: int | None) -> None:
    """An explicit ``--version``: 1 to MAX_VERSION."""
    if version is not None and not 1 <= version <= MAX_VERSION:
        raise UsageError(
            f"--version {version} is out of range",
            hint=f"versions are 1 to {MAX_VERSION}; omit --version to take the next free one",
            code="invalid_version",
        )
