"""Normalisation, abbreviations and query parsing for geocoding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from geoplex.servers.maps.text import (ParsedQuery, fold, housenumber_value, normalize,
                                       normalize_housenumber, parse_query)


@pytest.mark.parametrize(("text", "expected"), [
    ("Töölönkatu", "toolonkatu"),
    ("  MANNERHEIMINTIE  ", "mannerheimintie"),
    ("Åggelbygatan", "aggelbygatan"),
    ("Café Régatta", "cafe regatta"),
    ("Straße", "strasse"),
    ("Cap-d'Ail", "cap d ail"),
    ("Boulevard  des   Moulins,", "boulevard des moulins"),
    ("Diyarbakır", "diyarbakir"),
    ("Łódź", "lodz"),
])
def test_normalize_folds_case_diacritics_and_punctuation(text: str, expected: str) -> None:
    assert normalize(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("Bd des Moulins", "boulevard des moulins"),
    ("bd. des Moulins", "boulevard des moulins"),
    ("Bld Albert 1er", "boulevard albert 1er"),
    ("Av. de la Costa", "avenue de la costa"),
    ("ave Princesse Grace", "avenue princesse grace"),
    ("Pl. du Casino", "place du casino"),
    ("Main St", "main street"),
    ("Main St.", "main street"),
    ("Rue St Jean", "rue saint jean"),
    ("St. Petersburg", "saint petersburg"),
    ("Aleksanterin k.", "aleksanterin katu"),
    ("Aleksanterink.", "aleksanterinkatu"),
    ("Mannerheimint.", "mannerheimintie"),
    ("Mannerheimin t.", "mannerheimin tie"),
])
def test_normalize_expands_abbreviations(text: str, expected: str) -> None:
    assert normalize(text) == expected


def test_abbreviations_need_their_period_or_a_stem() -> None:
    # a bare letter is a house number's letter, and a short word is not a "-katu" stem
    assert normalize("Mannerheimintie 10 k") == "mannerheimintie 10 k"
    assert normalize("Park.") == "park"
    assert normalize("Aleksanterink") == "aleksanterink"


def test_index_and_query_meet_in_one_form() -> None:
    assert normalize("Boulevard des Moulins") == normalize("BD DES MOULINS")
    assert normalize("Töölönkatu") == normalize("toolonkatu")
    assert normalize("Aleksanterinkatu") == normalize("Aleksanterink.")


@given(st.text(max_size=40))
def test_normalize_is_idempotent_and_tidy(text: str) -> None:
    once = normalize(text)
    assert normalize(once) == once
    assert once == once.strip() and "  " not in once
    assert once == once.lower()


@given(st.text(alphabet="aäöåeéuüoczšž ", max_size=30))
def test_normalize_ignores_diacritics(text: str) -> None:
    assert normalize(text) == normalize(fold(text)) == normalize(
        text.translate(str.maketrans("äöåéüšž", "aoaeusz")))


@pytest.mark.parametrize(("number", "normal", "value"), [
    ("10", "10", 10), ("10 A", "10a", 10), ("10a", "10a", 10), ("12-14", "12-14", 12),
    ("4bis", "4bis", 4), ("B", "b", None),
])
def test_house_numbers_compare_without_spaces_and_case(number: str, normal: str,
                                                       value: int | None) -> None:
    assert normalize_housenumber(number) == normal
    assert housenumber_value(number) == value


@pytest.mark.parametrize(("query", "expected"), [
    ("Mannerheimintie 10", ParsedQuery("Mannerheimintie", "10", "")),
    ("Mannerheimintie 10, Helsinki", ParsedQuery("Mannerheimintie", "10", "Helsinki")),
    ("10 Avenue de la Costa", ParsedQuery("Avenue de la Costa", "10", "")),
    ("Aleksanterinkatu 52 B, 00100 Helsinki",
     ParsedQuery("Aleksanterinkatu", "52 B", "00100 Helsinki")),
    ("Aleksanterinkatu 52b", ParsedQuery("Aleksanterinkatu", "52B", "")),
    ("Helsinki Mannerheimintie 10", ParsedQuery("Helsinki Mannerheimintie", "10", "")),
    ("Helsinki, Mannerheimintie 10", ParsedQuery("Mannerheimintie", "10", "Helsinki")),
    ("Mannerheimintie 10 Helsinki", ParsedQuery("Mannerheimintie", "10", "Helsinki")),
    ("Monaco 2 rue des Orangers", ParsedQuery("rue des Orangers", "2", "Monaco")),
    ("4bis Rue de la Colle", ParsedQuery("Rue de la Colle", "4BIS", "")),
    ("3 bis Rue de la Colle", ParsedQuery("Rue de la Colle", "3 BIS", "")),
    ("6 Quai Antoine 1er", ParsedQuery("Quai Antoine 1er", "6", "")),
    ("Café Regatta, Helsinki", ParsedQuery("Café Regatta", None, "Helsinki")),
    ("Helsinki, FI", ParsedQuery("Helsinki", None, "FI")),
    ("00100 Helsinki", ParsedQuery("Helsinki", None, "00100")),
    ("", ParsedQuery("", None, "")),
    (" , ,", ParsedQuery("", None, "")),
])
def test_parse_query_splits_street_number_and_rest(query: str, expected: ParsedQuery) -> None:
    assert parse_query(query) == expected


@given(st.lists(st.sampled_from(["Mannerheimin", "tie", "Rue", "des", "Orangers", "katu"]),
                min_size=1, max_size=4),
       st.integers(1, 9999))
def test_parse_query_finds_the_number_after_any_street(words: list[str], number: int) -> None:
    street = " ".join(words)
    assert parse_query(f"{street} {number}") == ParsedQuery(street, str(number), "")
    assert parse_query(f"{street} {number}, Helsinki") == \
        ParsedQuery(street, str(number), "Helsinki")


def test_a_compatibility_capital_folds_to_lowercase() -> None:
    # mathematical italic capital alpha has no lowercase of its own; NFKD makes it "Α"
    assert fold("𝜜") == "α" and normalize(normalize("𝜜")) == normalize("𝜜")
