"""The design card asks for Rust-free Python servers: no installed dependency is built in Rust.

Every distribution installed in this environment (runtime and dev alike: `make test`
installs both) is scanned for native binaries (ELF files) that carry the Rust
toolchain's fingerprints: the panic runtime (``rust_panic``), paths of the Rust
standard library baked in by rustc (``/rustc/``), or PyO3, the Rust binding that
builds Python extensions (``pyo3``). A new dependency that brings Rust in fails here,
naming the package. Known traps: cryptography, pydantic-core, orjson, rpds-py,
watchfiles (via uvicorn[standard]), cramjam (via python-snappy, aiokafka's compression
extras), promql-parser, hypothesis >= 6.156 (its maturin-built ``_native``).
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

RUST_MARKERS = (b"rust_panic", b"/rustc/", b"pyo3")
ELF_MAGIC = b"\x7fELF"


def rust_markers(path: Path) -> list[str]:
    """The Rust fingerprints in ``path`` if it is an ELF binary; [] otherwise."""
    try:
        with path.open("rb") as handle:
            if handle.read(4) != ELF_MAGIC:
                return []
            data = ELF_MAGIC + handle.read()
    except OSError:
        return []
    return [marker.decode() for marker in RUST_MARKERS if marker in data]


def rust_built_files(dist: importlib.metadata.Distribution) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for file in dist.files or ():
        name = file.name
        if not (name.endswith(".so") or ".so." in name or "." not in name):
            continue
        path = Path(str(dist.locate_file(file)))
        if path.is_file():
            markers = rust_markers(path)
            if markers:
                found[str(file)] = markers
    return found


def test_marker_scan_finds_a_rust_fingerprint(tmp_path: Path) -> None:
    fake = tmp_path / "_native.so"
    fake.write_bytes(ELF_MAGIC + b"\0" * 64 + b"/rustc/90b35a6239c3d8bdabc530a6a0816f7ff89a0aaf/library")
    assert rust_markers(fake) == ["/rustc/"]
    plain = tmp_path / "_plain.so"
    plain.write_bytes(ELF_MAGIC + b"\0" * 64 + b"built by gcc")
    assert rust_markers(plain) == []
    text = tmp_path / "notes.so"
    text.write_bytes(b"pyo3 is mentioned in a text file, which is not a binary")
    assert rust_markers(text) == []


def test_no_installed_distribution_is_built_in_rust() -> None:
    offenders = {}
    scanned = 0
    for dist in importlib.metadata.distributions():
        scanned += 1
        files = rust_built_files(dist)
        if files:
            offenders[f"{dist.metadata['Name']}=={dist.version}"] = files
    assert scanned > 20, "the scan saw almost no installed distributions"
    assert not offenders, (
        "these installed packages ship Rust-built binaries; the design card asks for "
        f"Rust-free Python servers (pick another library or pin a release without Rust): {offenders}")
