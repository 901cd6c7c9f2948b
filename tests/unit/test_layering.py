"""The layers of STYLE.md, checked for every service the catalog finds.

- a service's ``domain.py`` is pure: no gRPC, generated messages, Redis, MongoDB or etcd;
- ``convert.py`` and ``config.py`` never import the service's app (its hub, servicer,
  adapters or entry point);
- ``servers/_runtime`` imports no service and neither infra nor the tools;
- a service imports no other service;
- the SDK (``clients/``) imports nothing from ``servers/``, ``infra/`` or ``tools/``;
- ``infra/`` does not import ``servers/`` (the runtime and infra stay apart).

Imports are read from the source (so an import inside a function counts too) and,
for the pure modules and the SDK, also checked by importing them in a fresh
interpreter (so an indirect import counts).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from geoplex.servers.catalog import service_packages

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {"geoplex.servers": ROOT / "servers", "geoplex.clients": ROOT / "clients",
           "geoplex.infra": ROOT / "infra", "geoplex.tools": ROOT / "tools"}
SERVICES = [name.rsplit(".", 1)[1] for name in service_packages()]
IMPURE = ("grpc", "grpc_status", "grpc_health", "grpc_reflection", "google.rpc", "redis",
          "pymongo", "motor", "bson", "etcd3", "etcd3aio")
APP_MODULES = ("app", "hub", "servicer", "__main__", "adapters")


def module_name(path: Path) -> str:
    for package, folder in FOLDERS.items():
        if path.is_relative_to(folder):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            return ".".join([package, *parts])
    raise ValueError(path)


def imports_of(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module ``source`` (the text of ``module``) imports, relative ones resolved."""
    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            found.add(prefix)
            found.update(f"{prefix}.{alias.name}" for alias in node.names)
    return found


def file_imports(path: Path) -> set[str]:
    return imports_of(path.read_text(), module_name(path), path.name == "__init__.py")


def sources(folder: Path) -> Iterator[Path]:
    yield from sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def within(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def violations(paths: Iterable[Path], forbidden: Iterable[str]) -> list[str]:
    forbidden = tuple(forbidden)
    return sorted(f"{path.relative_to(ROOT)} imports {name}" for path in paths
                  for name in file_imports(path) if within(name, forbidden))


def loaded_after_import(module: str) -> list[str]:
    """The modules a fresh interpreter has loaded after ``import module``."""
    probe = f"import sys, {module}\nprint('\\n'.join(sorted(sys.modules)))\n"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True)
    return done.stdout.split()


def test_the_catalog_finds_every_service_package() -> None:
    on_disk = sorted(p.parent.name for p in (ROOT / "servers").glob("*/__init__.py")
                     if not p.parent.name.startswith("_"))
    assert SERVICES == on_disk
    assert {"proximity", "presence"} <= set(SERVICES)


def test_the_checker_sees_direct_relative_and_nested_imports() -> None:
    source = ("import grpc\nfrom .app import Hub\nfrom . import hub\n"
              "def late():\n    from geoplex.servers.other import thing\n")
    found = imports_of(source, "geoplex.servers.demo.convert")
    assert within("grpc", found)
    assert "geoplex.servers.demo.app" in found
    assert "geoplex.servers.demo.hub" in found
    assert "geoplex.servers.other" in found


@pytest.mark.parametrize("service", SERVICES)
def test_domain_imports_no_grpc_messages_or_backend_drivers(service: str) -> None:
    domain = ROOT / "servers" / service / "domain.py"
    assert domain.is_file(), f"servers/{service} has no domain.py (STYLE.md: Shape of a service)"
    assert violations([domain], IMPURE) == []
    assert [name for name in file_imports(domain) if name.endswith("_pb2")
            or name.endswith("_pb2_grpc")] == []
    loaded = loaded_after_import(f"geoplex.servers.{service}.domain")
    assert [m for m in loaded if within(m, IMPURE) or m.endswith("_pb2")] == []


@pytest.mark.parametrize("module", ["geoplex.servers.proximity.quadtree",
                                    "geoplex.servers._runtime.errors",
                                    "geoplex.servers._runtime.paging"])
def test_pure_helper_modules_load_no_grpc_or_generated_messages(module: str) -> None:
    loaded = loaded_after_import(module)
    assert [m for m in loaded if within(m, IMPURE) or m.endswith("_pb2")] == []


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("layer", ["convert", "config"])
def test_convert_and_config_do_not_import_the_app(service: str, layer: str) -> None:
    path = ROOT / "servers" / service / f"{layer}.py"
    if not path.exists():
        pytest.skip(f"servers/{service} has no {layer}.py")
    app = [f"geoplex.servers.{service}.{name}" for name in APP_MODULES]
    assert violations([path], app) == []
    loaded = loaded_after_import(f"geoplex.servers.{service}.{layer}")
    assert [m for m in loaded if within(m, app)] == []


# the SDK modules that are contracts both ends share, which the runtime may import: what a
# call carries to the next service (request id, trace context) and the registry's entries
SHARED_CONTRACTS = ("geoplex.clients.context", "geoplex.clients.registry")


def test_runtime_imports_no_service_nor_infra_nor_tools() -> None:
    forbidden = [f"geoplex.servers.{s}" for s in SERVICES] + [
        "geoplex.servers.catalog", "geoplex.infra", "geoplex.tools", "geoplex.clients"]
    found = violations(sources(ROOT / "servers" / "_runtime"), forbidden)
    # and metrics_broker.py, the metrics' transport through the broker, uses its SDK
    transport = "servers/_runtime/metrics_broker.py "
    assert [v for v in found if not within(v.split(" imports ")[1], SHARED_CONTRACTS)
            and not v.startswith(transport)] == []


def test_the_shared_contracts_import_nothing_else_of_the_sdk() -> None:
    paths = [ROOT / "clients" / f"{name.rsplit('.', 1)[1]}.py" for name in SHARED_CONTRACTS]
    assert violations(paths, ["geoplex.clients", "geoplex.servers"]) == []


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_imports_no_other_service(service: str) -> None:
    others = [f"geoplex.servers.{s}" for s in SERVICES if s != service] + [
        "geoplex.servers.catalog", "geoplex.infra", "geoplex.tools"]
    assert violations(sources(ROOT / "servers" / service), others) == []


def test_the_sdk_imports_no_server_infra_or_tools_code() -> None:
    forbidden = ["geoplex.servers", "geoplex.infra", "geoplex.tools"]
    assert violations(sources(ROOT / "clients"), forbidden) == []
    modules = [module_name(p) for p in sources(ROOT / "clients")]
    loaded = loaded_after_import(", ".join(modules))
    assert [m for m in loaded if within(m, forbidden)] == []


def test_infra_does_not_import_the_servers() -> None:
    assert violations(sources(ROOT / "infra"), ["geoplex.servers", "geoplex.tools"]) == []
