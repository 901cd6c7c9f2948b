"""Type-check the hand-written code with mypy, as the installed package ``geoplex`` sees it.

    python scripts/typecheck.py            # servers, clients, tools, infra (what make test runs)
    python scripts/typecheck.py -p geoplex.servers.presence   # one package

The folders are joined into one package only at install time (setup.py maps
``servers/`` to ``geoplex.servers`` and so on, the editable install through an
import hook mypy does not run), so this script lays out the same tree with
symbolic links under ``.venv/typecheck/`` and runs mypy there. ``gen/`` is
linked too: its ``.pyi`` stubs give the generated messages their types, and
``[tool.mypy]`` in pyproject.toml ignores errors inside generated code.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / ".venv" / "typecheck"
HAND_WRITTEN = {"servers": "servers", "clients": "clients", "tools": "tools", "infra": "infra"}
DEFAULT_PACKAGES = ("geoplex.servers", "geoplex.clients", "geoplex.tools", "geoplex.infra")


def lay_out_tree() -> Path:
    package = TREE / "geoplex"
    package.mkdir(parents=True, exist_ok=True)
    wanted = {entry.name: entry for entry in (ROOT / "gen" / "geoplex").iterdir()
              if entry.name != "__pycache__"}
    wanted.update({name: ROOT / folder for name, folder in HAND_WRITTEN.items()})
    for stale in package.iterdir():
        if stale.name not in wanted or stale.resolve() != wanted[stale.name].resolve():
            stale.unlink()
    for name, source in wanted.items():
        link = package / name
        if not link.is_symlink():
            link.symlink_to(source)
    return TREE


def main(argv: list[str]) -> int:
    tree = lay_out_tree()
    args = argv or [arg for package in DEFAULT_PACKAGES for arg in ("-p", package)]
    command = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
               "--cache-dir", str(ROOT / ".venv" / "mypy_cache"), *args]
    done = subprocess.run(command, cwd=tree, env={**os.environ, "MYPYPATH": ""}, check=False)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
