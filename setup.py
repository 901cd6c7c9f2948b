"""Map the fixed top-level folders onto one installed package, ``geoplex``.

gen/geoplex -> geoplex (generated protobuf/gRPC code, proto path == import path)
servers     -> geoplex.servers
clients     -> geoplex.clients
infra       -> geoplex.infra
tools       -> geoplex.tools  (the operator side of the `geoplex` command)
"""

from setuptools import find_packages, setup

ROOTS = {"geoplex": "gen/geoplex", "geoplex.servers": "servers",
         "geoplex.clients": "clients", "geoplex.infra": "infra",
         "geoplex.tools": "tools"}

packages: list[str] = []
package_dir: dict[str, str] = {}
for name, folder in ROOTS.items():
    package_dir[name] = folder
    packages.append(name)
    for sub in find_packages(folder):
        if name == "geoplex" and sub.split(".")[0] in {"servers", "clients", "infra", "tools"}:
            continue
        packages.append(f"{name}.{sub}")

setup(
    packages=packages,
    package_dir=package_dir,
    package_data={"geoplex": ["py.typed", "**/*.pyi"], "geoplex.infra": ["*.json"],
                  "geoplex.servers": ["maps/page/*", "telemetry/rules/*.yml"],
                  "geoplex.servers.telemetry.dashboard": ["*.html", "*.js", "*.css"]},
)
