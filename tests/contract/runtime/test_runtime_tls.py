"""TLS and mutual TLS, with a throwaway CA made by the real ``openssl`` binary.

(The ``cryptography`` package is not a dependency of Geoplex, so the
certificates come from ``openssl``, which every supported host has.)
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from runtime_probe import MakeServer, ProbeClient, ProbeProximityServicer

from geoplex.clients.channel import ChannelOptions
from geoplex.clients.errors import UnavailableError
from geoplex.clients.mesh import MeshClient
from geoplex.servers._runtime.config import TlsConfig

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_ca: Path  # a CA that signed nothing here


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _make_ca(folder: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
             "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder)


def _make_leaf(folder: Path, name: str, ca: str, extensions: str) -> None:
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
             cwd=folder)
    (folder / f"{name}.ext").write_text(extensions)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
             "-extfile", f"{name}.ext", cwd=folder)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    _make_ca(folder, "ca")
    _make_ca(folder, "stranger")
    _make_leaf(folder, "localhost", "ca", "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
               "extendedKeyUsage=serverAuth\n")
    _make_leaf(folder, "client", "ca", "extendedKeyUsage=clientAuth\n")
    return Pki(folder / "ca.pem", folder / "localhost.pem", folder / "localhost.key",
               folder / "client.pem", folder / "client.key", folder / "stranger.pem")


async def test_tls_server_answers_a_client_that_trusts_its_ca(
        make_server: MakeServer, probe: ProbeProximityServicer, pki: Pki) -> None:
    server = await make_server(probe, tls=TlsConfig(pki.server_cert, pki.server_key, None))
    options = ChannelOptions(root_certificates=pki.ca, timeout=5)

    async with ProbeClient(f"localhost:{server.port}", options) as client:
        business = await client.get_business("b-9")

    assert business.id == "b-9"


async def test_client_that_does_not_trust_the_server_certificate_is_refused(
        make_server: MakeServer, pki: Pki) -> None:
    server = await make_server(tls=TlsConfig(pki.server_cert, pki.server_key, None))
    options = ChannelOptions(root_certificates=pki.stranger_ca, timeout=3, retry=False)

    async with MeshClient(f"localhost:{server.port}", options) as client:
        with pytest.raises(UnavailableError):
            await client.ping()


async def test_plaintext_client_cannot_call_a_tls_server(
        make_server: MakeServer, pki: Pki) -> None:
    server = await make_server(tls=TlsConfig(pki.server_cert, pki.server_key, None))

    async with MeshClient(server.address, ChannelOptions(timeout=3, retry=False)) as client:
        with pytest.raises(UnavailableError):
            await client.ping()


async def test_mutual_tls_server_accepts_a_client_certificate_signed_by_its_client_ca(
        make_server: MakeServer, pki: Pki) -> None:
    server = await make_server(tls=TlsConfig(pki.server_cert, pki.server_key, pki.ca))
    options = ChannelOptions(root_certificates=pki.ca, client_cert=pki.client_cert,
                             client_key=pki.client_key, timeout=5)

    async with MeshClient(f"localhost:{server.port}", options) as client:
        assert await client.ping(4) == b"\x00" * 4


async def test_mutual_tls_server_refuses_a_client_without_a_certificate(
        make_server: MakeServer, pki: Pki) -> None:
    server = await make_server(tls=TlsConfig(pki.server_cert, pki.server_key, pki.ca))
    options = ChannelOptions(root_certificates=pki.ca, timeout=3, retry=False)

    async with MeshClient(f"localhost:{server.port}", options) as client:
        with pytest.raises(UnavailableError) as info:
            await client.ping()

    assert info.value.code is grpc.StatusCode.UNAVAILABLE
