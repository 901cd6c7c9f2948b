"""Geocoding quality on the real gazetteer: Helsinki and Monaco OSM, GeoNames places.

About 300 real addresses (seeded sample) are looked up as written, with one typo in the
street name, without diacritics, city first, with abbreviations, and reverse-geocoded
from their own points. The table of top-1/top-5 rates is printed (``pytest -s``); the
aims are asserted.
"""

from __future__ import annotations

import random
import statistics
import time
import unicodedata
from collections.abc import Callable

import pytest

from geoplex.infra import data
from geoplex.servers.maps.adapters.geonames import read_places
from geoplex.servers.maps.adapters.osm_gazetteer import read_gazetteer
from geoplex.servers.maps.domain import ADDRESS, Feature
from geoplex.servers.maps.geocoding import Geocoder, address_label
from geoplex.servers.maps.text import normalize, normalize_housenumber

SEED = 20240601
HELSINKI_SAMPLE, MONACO_SAMPLE = 250, 50
AddressKey = tuple[str, str]


@pytest.fixture(scope="module")
def gazetteer() -> tuple[Geocoder, list[Feature], float]:
    fetched = data.fetch(["helsinki", "monaco", "geonames"], progress=lambda _m: None)
    start = time.perf_counter()
    helsinki, helsinki_lines = read_gazetteer(fetched["helsinki"]["pbf"], "Helsinki")
    monaco, monaco_lines = read_gazetteer(fetched["monaco"]["pbf"], "Monaco")
    places = read_places(fetched["geonames"]["cities"])
    geocoder = Geocoder(helsinki + monaco + places, helsinki_lines + monaco_lines)
    elapsed = time.perf_counter() - start
    rng = random.Random(SEED)
    sample = (_sample(helsinki, HELSINKI_SAMPLE, rng) + _sample(monaco, MONACO_SAMPLE, rng))
    return geocoder, sample, elapsed


def _key(f: Feature) -> AddressKey:
    """Street and number: what a query without a city asks for."""
    return normalize(f.name), normalize_housenumber(f.housenumber)


def _sample(features: list[Feature], count: int, rng: random.Random) -> list[Feature]:
    """Distinct addresses (one per street and number), ``count`` at most."""
    distinct: dict[AddressKey, Feature] = {}
    for f in features:
        if f.kind == ADDRESS and normalize(f.name):
            distinct.setdefault(_key(f), f)
    chosen = list(distinct.values())
    return rng.sample(chosen, min(count, len(chosen)))


def _head(f: Feature) -> str:
    """"Mannerheimintie 10" or "10 Avenue de la Costa": the label without the city."""
    return address_label(f.name, f.housenumber, "", "")


def _typo(f: Feature, rng: random.Random) -> str:
    name = f.name
    letters = [i for i, ch in enumerate(name) if ch.isalpha()]
    i = rng.choice(letters)
    op = rng.choice(("substitute", "delete", "insert"))
    alphabet = "abcdefghijklmnopqrstuvwxyz"
    if op == "substitute":
        typo = name[:i] + rng.choice(alphabet.replace(name[i].lower(), "")) + name[i + 1:]
    elif op == "delete":
        typo = name[:i] + name[i + 1:]
    else:
        typo = name[:i] + rng.choice(alphabet) + name[i:]
    return _head(Feature(ADDRESS, typo, f.lat, f.lon, housenumber=f.housenumber))


def _plain(f: Feature) -> str:
    text = unicodedata.normalize("NFKD", _head(f))
    return "".join(ch for ch in text if not unicodedata.combining(ch))


ABBREVIATIONS = (("Boulevard ", "Bd "), ("Avenue ", "Av. "), ("katu", "k."), ("tie", "t."))


def _abbreviated(f: Feature) -> str | None:
    for full, short in ABBREVIATIONS:
        if full.strip() == "katu" or full.strip() == "tie":
            word = f.name.split()[0]
            if word.endswith(full) and len(word) > len(full) + 3 and len(f.name.split()) == 1:
                return _head(Feature(ADDRESS, word[:-len(full)] + short, 0, 0,
                                     housenumber=f.housenumber))
        elif f.name.startswith(full):
            return _head(Feature(ADDRESS, short + f.name[len(full):], 0, 0,
                                 housenumber=f.housenumber))
    return None


VARIANTS: dict[str, Callable[[Feature, random.Random], str | None]] = {
    "exact": lambda f, _r: _head(f),
    "exact, city": lambda f, _r: f"{_head(f)}, {f.city}",
    "one typo": _typo,
    "no diacritics": lambda f, _r: _plain(f) if not f.name.isascii() else None,
    "city first": lambda f, _r: f"{f.city} {_head(f)}",
    "abbreviated": lambda f, _r: _abbreviated(f),
}


def test_geocoding_finds_sampled_addresses(
        gazetteer: tuple[Geocoder, list[Feature], float]) -> None:
    geocoder, sample, build_s = gazetteer
    labels = _labels_by_key(geocoder, sample)
    rng = random.Random(SEED)
    rates: dict[str, tuple[float, float, int]] = {}
    latencies: list[float] = []
    for variant, make in VARIANTS.items():
        top1 = top5 = total = 0
        for f in sample:
            query = make(f, rng)
            if query is None:
                continue
            start = time.perf_counter()
            found = geocoder.geocode(query, limit=5)
            latencies.append(time.perf_counter() - start)
            wanted = labels[_key(f)]
            total += 1
            top1 += bool(found) and normalize(found[0].label) in wanted
            top5 += any(normalize(c.label) in wanted for c in found)
        rates[variant] = (top1 / total, top5 / total, total)
    latencies.sort()
    print(f"\nbuild {build_s:.1f} s, {geocoder.nbytes() / 1e6:.0f} MB, {geocoder.counts()}")
    print(f"query latency p50 {statistics.median(latencies) * 1e3:.2f} ms, "
          f"p99 {latencies[int(len(latencies) * 0.99)] * 1e3:.2f} ms")
    print(f"{'variant':<16}{'top-1':>8}{'top-5':>8}{'n':>6}")
    for variant, (r1, r5, n) in rates.items():
        print(f"{variant:<16}{r1:>8.1%}{r5:>8.1%}{n:>6}")
    assert rates["exact"][0] >= 0.95
    assert rates["exact, city"][0] >= 0.95
    assert rates["one typo"][0] >= 0.85
    assert rates["no diacritics"][0] >= 0.95
    assert rates["city first"][0] >= 0.90
    assert rates["abbreviated"][0] >= 0.85


def _labels_by_key(geocoder: Geocoder, sample: list[Feature]) -> dict[AddressKey, set[str]]:
    """Every label (normalised: the data spells some streets in two cases) an address of
    the same street and number may carry: some are mapped twice, with and without a
    postcode, or in two localities."""
    wanted = {_key(f) for f in sample}
    labels: dict[AddressKey, set[str]] = {k: set() for k in wanted}
    for f in geocoder.addresses():
        if _key(f) in labels:
            labels[_key(f)].add(normalize(address_label(f.name, f.housenumber, f.postcode,
                                                        f.city)))
    return labels


def test_reverse_geocoding_returns_the_sampled_address(
        gazetteer: tuple[Geocoder, list[Feature], float]) -> None:
    geocoder, sample, _build_s = gazetteer
    labels = _labels_by_key(geocoder, sample)
    exact = 0
    distances: list[float] = []
    for f in sample:
        answer = geocoder.reverse(f.lat, f.lon)
        assert answer is not None and answer.kind == ADDRESS
        exact += normalize(answer.label) in labels[_key(f)]
        distances.append(answer.distance_m)
    rate = exact / len(sample)
    print(f"\nreverse: exact {rate:.1%} of {len(sample)}, "
          f"median distance {statistics.median(distances):.2f} m")
    assert rate >= 0.90
    assert statistics.median(distances) < 1.0


def test_places_and_streets_are_found_by_name(
        gazetteer: tuple[Geocoder, list[Feature], float]) -> None:
    geocoder, _sample_, _build_s = gazetteer
    assert geocoder.geocode("Helsinki, FI")[0].label == "Helsinki, FI"
    assert geocoder.geocode("helsinki")[0].label == "Helsinki, FI"  # the capital first
    assert geocoder.geocode("Bd des Moulins")[0].label == "Boulevard des Moulins, Monaco"
    reverse = geocoder.reverse(60.17, 25.5)  # at sea east of Helsinki: a place
    assert reverse is not None and reverse.kind == "place" and reverse.distance_m > 1000
