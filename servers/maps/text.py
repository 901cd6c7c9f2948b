"""Text normalisation and query parsing for geocoding.

The gazetteer's names and a person's query go through the same :func:`normalize`, so
"Töölönkatu", "TOOLONKATU" and "toolonkatu" meet in one form, and "Bd des Moulins" meets
"Boulevard des Moulins". :func:`parse_query` splits a query into its street (or name)
text, its house number and the rest (postcode, city), whatever the order.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# letters NFKD does not decompose into a base letter plus a combining mark
_LETTERS = str.maketrans({
    "ß": "ss", "æ": "ae", "œ": "oe", "ø": "o", "ł": "l", "đ": "d", "ð": "d", "þ": "th",
    "ı": "i", "ħ": "h", "ŧ": "t", "ŀ": "l",
})

# whole-token abbreviations, after lowercasing (a trailing period is optional unless the
# key has one: a bare "k" or "t" is too often a house number's letter)
_ABBREVIATIONS = {
    "k.": "katu", "t.": "tie", "pl.": "place",
    "av": "avenue", "av.": "avenue", "ave": "avenue", "ave.": "avenue",
    "bd": "boulevard", "bd.": "boulevard", "bld": "boulevard", "bld.": "boulevard",
    "blvd": "boulevard", "blvd.": "boulevard",
}
_EXPANDABLE = frozenset(_ABBREVIATIONS) | {"st", "st."}
# Finnish street words shortened at their end: "Aleksanterink." -> "aleksanterinkatu"
_SUFFIXES = (("k.", "katu"), ("t.", "tie"))
_MIN_STEM = 4

_TOKEN = re.compile(r"[^\W_]+(?:\.[^\W_]+)*\.?")  # a word, keeping a trailing period
_HOUSE_NUMBER = re.compile(r"\d{1,4}(?:[a-z]|bis|ter)?(?:[-/]\d{1,4}[a-z]?)?", re.IGNORECASE)
_POSTCODE = re.compile(r"\d{5}")
_NUMBER_SUFFIXES = frozenset({"bis", "ter"})
# street types written before the name and after the number ("10 Avenue de la Costa")
NUMBER_FIRST = frozenset({
    "avenue", "boulevard", "rue", "quai", "place", "chemin", "allee", "route", "impasse",
    "esplanade", "square", "promenade", "montee", "escalier", "escaliers", "passage",
    "traverse", "cours", "descente", "rampe", "ruelle", "sentier", "corniche", "galerie",
    "voie", "via", "piazza", "largo", "plaza", "calle", "av", "bd",
})


def fold(text: str) -> str:
    """Lowercase without diacritics: "Töölönkatu" -> "toolonkatu", "Straße" -> "strasse"."""
    text = text.lower()
    if text.isascii():
        return text
    # lowercase again: a compatibility form may decompose to a capital ("𝜜" -> "Α")
    text = unicodedata.normalize("NFKD", text.translate(_LETTERS)).lower()
    return "".join(c for c in text if not unicodedata.combining(c))


def _expand(token: str, last: bool) -> str:
    """One token with its abbreviation expanded; "st" is "saint" before a name
    ("St Jean", "Rue St Laurent") and "street" at the end ("Main St")."""
    if token in ("st", "st."):
        return "street" if last else "saint"
    expanded = _ABBREVIATIONS.get(token)
    if expanded is not None:
        return expanded
    if token[-1] == ".":
        for short, full in _SUFFIXES:
            stem = token[:-len(short)]
            if token.endswith(short) and len(stem) >= _MIN_STEM and stem.isalpha():
                return stem + full
    return token.replace(".", " ")


def normalize(text: str) -> str:
    """The comparable form of a name or query: folded, abbreviations expanded,
    punctuation as spaces, single spaces."""
    folded = fold(text)
    tokens = _TOKEN.findall(folded)
    last = len(tokens) - 1
    out = [_expand(t, i == last) if t in _EXPANDABLE or "." in t else t
           for i, t in enumerate(tokens)]
    joined = " ".join(out)
    return " ".join(joined.split()) if "." in folded else joined


def normalize_housenumber(number: str) -> str:
    """"10 A", "10a" and "10-A" -> "10a": how a house number is compared."""
    return "".join(ch for ch in fold(number) if ch.isalnum() or ch in "-/")


def housenumber_value(number: str) -> int | None:
    """The leading integer of a house number ("12-14" -> 12, "10 A" -> 10), if any."""
    match = re.match(r"\s*(\d+)", number)
    return int(match.group(1)) if match else None


@dataclass(frozen=True, slots=True)
class ParsedQuery:
    """A query split into what names the street or thing, its house number, and the rest
    (postcode, city, country) in the person's own spelling."""

    street: str
    housenumber: str | None
    rest: str


def _is_number(token: str) -> bool:
    return bool(_HOUSE_NUMBER.fullmatch(token)) and not _POSTCODE.fullmatch(token)


def _number_at(tokens: list[str], i: int) -> int:
    """How many tokens from ``i`` form a house number: "52", "52 B", "3 bis"; 0 if none."""
    if not _is_number(tokens[i]):
        return 0
    if i + 1 < len(tokens):
        nxt = tokens[i + 1].lower()
        if (len(nxt) == 1 and nxt.isalpha()) or nxt in _NUMBER_SUFFIXES:
            return 2
    return 1


def parse_query(text: str) -> ParsedQuery:
    """Split ``text`` at commas into parts; the first part holding a house number (at its
    end, its start, or after the street) gives street and number; everything else is the
    rest. Without a number, the first part is the street (or name) text."""
    parts = [p.split() for p in text.split(",")]
    parts = [p for p in parts if p]
    for index, tokens in enumerate(parts):
        found = _find_number(tokens)
        if found is None:
            continue
        start, length = found
        number = " ".join(tokens[start:start + length]).upper() if length == 2 else \
            tokens[start].upper()
        before, after = tokens[:start], tokens[start + length:]
        if before and not (after and fold(after[0]).rstrip(".") in NUMBER_FIRST):
            street, extra = before, after
        elif before:  # "Monaco 2 rue des Orangers": the locality came first
            street, extra = after, before
        else:
            street, extra = after, []
        others = [" ".join(p) for j, p in enumerate(parts) if j != index]
        rest = [" ".join(extra)] if extra else []
        return ParsedQuery(" ".join(street), number, ", ".join(rest + others))
    if not parts:
        return ParsedQuery("", None, "")
    head = [t for t in parts[0] if not _POSTCODE.fullmatch(t)]
    postcodes = [t for t in parts[0] if _POSTCODE.fullmatch(t)]
    rest = [" ".join(postcodes)] if postcodes else []
    return ParsedQuery(" ".join(head), None,
                       ", ".join(rest + [" ".join(p) for p in parts[1:]]))


def _find_number(tokens: list[str]) -> tuple[int, int] | None:
    """Where the house number is in one comma-separated part: (first token, token count).

    Preferred at the end ("Mannerheimintie 10", "... 52 B"), then at the start
    ("10 Avenue de la Costa"), then after some street words ("Mannerheimintie 10 Helsinki").
    A number that is the whole part is a number only if nothing else could be.
    """
    n = len(tokens)
    if n >= 2 and _number_at(tokens, n - 2) == 2:
        return n - 2, 2
    if n >= 2 and _number_at(tokens, n - 1) == 1:
        return n - 1, 1
    if n >= 2 and _number_at(tokens, 0):
        return 0, _number_at(tokens, 0)
    for i in range(1, n - 1):
        length = _number_at(tokens, i)
        if length:
            return i, length
    return None
