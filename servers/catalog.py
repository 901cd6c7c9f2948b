"""Every service of the mesh, found by its declaration (``servers/<name>/service.py``).

Adding a service adds a package with a ``service.py``; nothing here changes
(docs/adding-a-service.md).
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from pathlib import Path

from ._runtime.declaration import ServiceDeclaration

_HERE = Path(__file__).resolve().parent


def service_packages() -> tuple[str, ...]:
    """The full names of the service packages: ``geoplex.servers.<name>``, not ``_runtime``."""
    return tuple(sorted(f"{__package__}.{info.name}" for info in pkgutil.iter_modules([str(_HERE)])
                        if info.ispkg and not info.name.startswith("_")))


@cache
def services() -> tuple[ServiceDeclaration, ...]:
    """Every declared service, by default port (the order ``geoplex up`` lists them)."""
    found = []
    for package in service_packages():
        declared = importlib.import_module(f"{package}.service").SERVICE
        if not isinstance(declared, ServiceDeclaration):
            raise TypeError(f"{package}.service.SERVICE is not a ServiceDeclaration")
        if declared.module != package:
            raise ValueError(f"{package}.service declares module {declared.module!r}")
        found.append(declared)
    return tuple(sorted(found, key=lambda s: s.default_port))


def service(name: str) -> ServiceDeclaration:
    """One service by its short name; KeyError names the known ones."""
    for declared in services():
        if declared.name == name:
            return declared
    raise KeyError(f"no service {name!r}; declared: {', '.join(s.name for s in services())}")
