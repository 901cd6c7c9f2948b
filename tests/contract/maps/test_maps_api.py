"""MapsService over real gRPC: a maps server on the fetched Helsinki, Monaco and GeoNames data."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from geoplex.clients import ChannelOptions
from geoplex.clients.errors import InvalidArgumentError, NotFoundError
from geoplex.clients.maps import MapsClient
from geoplex.infra import data
from geoplex.maps.v1 import maps_pb2 as pb
from geoplex.servers._runtime.geo import haversine_m

if TYPE_CHECKING:
    from conftest import ServerProcess  # tests/conftest.py


@pytest.fixture(scope="module")
def maps_env() -> dict[str, str]:
    fetched = data.fetch(["helsinki", "monaco", "geonames"], progress=lambda _m: None)
    return {"GEOPLEX_MAPS_EXTRACTS": f"Helsinki={fetched['helsinki']['pbf']},"
                                     f"Monaco={fetched['monaco']['pbf']}",
            "GEOPLEX_MAPS_PLACES": str(fetched["geonames"]["cities"])}


@pytest.fixture(scope="module")
def maps_server(server_factory: Callable[..., ServerProcess],
                maps_env: dict[str, str]) -> ServerProcess:
    return server_factory("maps", maps_env, "maps")


@pytest.fixture
async def maps(maps_server: ServerProcess) -> AsyncIterator[MapsClient]:
    async with MapsClient(maps_server.address, ChannelOptions(retry=False)) as client:
        yield client


async def test_an_exact_address_is_the_first_candidate(maps: MapsClient) -> None:
    found = await maps.geocode("Kaivokatu 8, Helsinki")
    best = found.candidates[0]
    assert best.kind == pb.PLACE_KIND_ADDRESS
    assert best.label.startswith("Kaivokatu 8")
    assert "Helsinki" in best.label
    assert not best.interpolated
    # Kaivokatu runs along the south side of the railway station
    assert haversine_m(best.location.latitude, best.location.longitude, 60.1707, 24.9440) < 400


async def test_a_typo_and_missing_diacritics_still_find_the_address(maps: MapsClient) -> None:
    exact = (await maps.geocode("Yrjönkatu 16")).candidates[0]
    assert exact.label.startswith("Yrjönkatu 16")
    for text in ("Yrjonkatu 16", "Yrjönkattu 16", "helsinki yrjönkatu 16"):
        best = (await maps.geocode(text)).candidates[0]
        assert best.label == exact.label, text
        assert best.confidence <= exact.confidence


async def test_a_city_is_a_place(maps: MapsClient) -> None:
    best = (await maps.geocode("Helsinki")).candidates[0]
    assert best.kind == pb.PLACE_KIND_PLACE
    assert "Helsinki" in best.label
    assert haversine_m(best.location.latitude, best.location.longitude, 60.1699, 24.9384) < 5000


async def test_reverse_geocoding_an_address_point_names_that_address(maps: MapsClient) -> None:
    best = (await maps.geocode("Kaivokatu 8, Helsinki")).candidates[0]
    here = (best.location.latitude, best.location.longitude)
    back = await maps.reverse(here)
    assert back.kind == pb.PLACE_KIND_ADDRESS
    assert back.label.startswith("Kaivokatu 8")
    assert back.distance_meters < 1.0


async def test_reverse_geocoding_in_the_ocean_finds_nothing(maps: MapsClient) -> None:
    with pytest.raises(NotFoundError) as caught:
        await maps.reverse((0.0, -30.0))  # mid-Atlantic
    assert caught.value.reason == "NOTHING_NEARBY"


async def test_pages_follow_each_other_and_a_token_belongs_to_its_query(
        maps: MapsClient) -> None:
    largest = await maps.geocode("Bulevardi", page_size=50)   # the largest page allowed
    assert 1 <= len(largest.candidates) <= 50
    first = await maps.geocode("Bulevardi", page_size=2)
    assert len(first.candidates) == 2 and first.next_page_token
    second = await maps.geocode("Bulevardi", page_size=2, page_token=first.next_page_token)
    assert {c.label for c in first.candidates}.isdisjoint(c.label for c in second.candidates)
    with pytest.raises(InvalidArgumentError) as caught:
        await maps.geocode("Kaivokatu", page_size=2, page_token=first.next_page_token)
    assert caught.value.field == "page_token"


@pytest.mark.parametrize(("text", "size", "field"), [
    ("", 0, "text"), ("   ", 0, "text"), ("x" * 201, 0, "text"), ("a\x07b", 0, "text"),
    ("Kaivokatu", 51, "page_size"), ("Kaivokatu", -1, "page_size"),
])
async def test_bad_geocode_requests_are_invalid_arguments_naming_the_field(
        maps: MapsClient, text: str, size: int, field: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        await maps.geocode(text, page_size=size)
    assert caught.value.field == field


async def test_bad_reverse_requests_are_invalid_arguments_naming_the_field(
        maps: MapsClient) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        await maps.reverse((91.0, 0.0))
    assert caught.value.field.startswith("location")
    assert "91" not in caught.value.message  # a coordinate is never echoed
    with pytest.raises(InvalidArgumentError) as caught:
        await maps.reverse((60.17, 24.94), max_distance_m=5000)
    assert caught.value.field == "max_distance_meters"
    with pytest.raises(InvalidArgumentError) as caught:
        await maps.geocode("Kaivokatu", bias=(0.0, 200.0))
    assert caught.value.field.startswith("bias")


async def test_info_counts_every_kind(maps: MapsClient) -> None:
    info = await maps.info()
    counts = {c.kind: c.count for c in info.counts}
    assert counts[pb.PLACE_KIND_PLACE] == 234_908
    assert counts[pb.PLACE_KIND_ADDRESS] > 1000
    assert counts[pb.PLACE_KIND_STREET] > 100
    assert counts[pb.PLACE_KIND_POI] > 100
    assert set(info.sources) == {"Helsinki.osm.pbf", "monaco.osm.pbf", "cities500.json"}


def test_the_cli_geocodes_and_reverses(maps_server: ServerProcess) -> None:
    def geoplex(*args: str) -> str:
        done = subprocess.run([str(Path(sys.executable).parent / "geoplex"), *args,
                               "--target", maps_server.address],
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout
    out = geoplex("geocode", "Kaivokatu 8, Helsinki", "--limit", "3")
    assert "Kaivokatu 8" in out and "address" in out
    out = geoplex("reverse", "60.1707,24.9440", "--max-distance", "300")
    assert "away" in out
    assert "place" in geoplex("maps", "info")


def test_a_missing_data_file_stops_start_up_with_one_line(tmp_path: Path) -> None:
    env = {"GEOPLEX_MAPS_EXTRACTS": f"Nowhere={tmp_path / 'missing.osm.pbf'}",
           "GEOPLEX_MAPS_PORT": "0", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "geoplex.servers.maps"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "missing.osm.pbf is missing" in lines[0] and "geoplex data fetch" in lines[0]
