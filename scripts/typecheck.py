"""Type-check the hand-written code with mypy, as the installed package ``geoplex`` sees it.

    python scripts/typecheck.py            # servers, clients, tools, infra, bench, tests
    python scripts/typecheck.py -p geoplex.servers.presence   # one package
    python scripts/typecheck.py tests/unit servers/presence/app.py   # files or folders

The folders are joined into one package only at install time (setup.py maps
``servers/`` to ``geoplex.servers`` and so on, the editable install through an
import hook mypy does not run), so this script lays out the same tree with
symbolic links under ``.venv/typecheck/`` and runs mypy there. ``gen/`` is
linked too: its ``.pyi`` stubs give the generated messages their types, and
``[tool.mypy]`` in pyproject.toml ignores errors inside generated code.

``bench/`` and ``tests/`` are linked beside the package, so their ``from geoplex...``
imports resolve to the same tree. ``bench`` is a package (``python -m bench.runtime``).
``tests/`` is not: pytest puts each test file's folder on ``sys.path`` and imports the
file by its bare name (``import test_proximity_api``, ``from runtime_probe import ...``),
and mypy is told the same: every folder under ``tests/`` that holds Python files is an
explicit package base (``MYPYPATH``, ``--explicit-package-bases``). Only the conftest.py
files share a name; pytest imports each one on its own, and nothing imports them but
``tests/conftest.py`` (``conftest`` to mypy, for its fixture types), so the other
conftests are linked under ``conftests/`` with distinct module names
(``conftests.tests.contract.runtime.conftest``: reported at that path).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / ".venv" / "typecheck"
HAND_WRITTEN = {"servers": "servers", "clients": "clients", "tools": "tools", "infra": "infra"}
OUTSIDE = ("bench", "tests")  # linked beside the package, TREE/bench and TREE/tests
CONFTESTS = "conftests"  # TREE/conftests/tests/<folder>/conftest.py -> tests/<folder>/conftest.py
DEFAULT_PACKAGES = ("geoplex.servers", "geoplex.clients", "geoplex.tools", "geoplex.infra",
                    "bench")
DEFAULT_FOLDERS = ("tests",)  # every Python file below, checked as pytest imports it
# left out of a folder's files until they land (a file named on the command line is checked)
NOT_YET: tuple[str, ...] = ()


def _link(link: Path, source: Path) -> None:
    """``link`` -> ``source``, left alone when it is one already (another run may be reading)."""
    if link.is_symlink() and link.resolve() == source.resolve():
        return
    if link.is_symlink() or link.is_file():
        link.unlink()
    link.parent.mkdir(parents=True, exist_ok=True)
    try:
        link.symlink_to(source)
    except FileExistsError:  # a run beside this one made it
        pass


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
        _link(package / name, source)
    for folder in OUTSIDE:
        _link(TREE / folder, ROOT / folder)
    conftests = {TREE / source_of(path): path for path in _test_files(ROOT / "tests")
                 if path.name == "conftest.py" and path.parent != ROOT / "tests"}
    for stale in (TREE / CONFTESTS).rglob("*.py"):
        if stale not in conftests:  # its conftest.py is gone
            stale.unlink(missing_ok=True)
    for link, source in conftests.items():
        _link(link, source)
    return TREE


def _test_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*.py")
                  if "__pycache__" not in path.parts and path.is_file())


def pytest_roots() -> list[str]:
    """The folders pytest puts on ``sys.path``: each one under tests/ holding a .py file."""
    return sorted({str(path.parent.relative_to(ROOT)) for path in _test_files(ROOT / "tests")})


def source_of(path: Path) -> str:
    """A file in tests/ as a path in TREE that mypy names as pytest does."""
    relative = path.relative_to(ROOT)
    if path.name == "conftest.py" and path.parent != ROOT / "tests":
        relative = CONFTESTS / relative
    return str(relative)


def sources_in(folder: Path) -> list[str]:
    skipped = [ROOT / name for name in NOT_YET if not folder.is_relative_to(ROOT / name)]
    return [source_of(path) for path in _test_files(folder)
            if not any(path.is_relative_to(skip) for skip in skipped)]


def translate(arg: str) -> list[str]:
    """A file or folder of the checkout as mypy, running in TREE, finds it; else ``arg``."""
    path = Path(arg).resolve()
    if arg.startswith("-") or not path.exists() or not path.is_relative_to(ROOT):
        return [arg]
    if path.is_relative_to(ROOT / "tests"):
        return sources_in(path) if path.is_dir() else [source_of(path)]
    for name, folder in HAND_WRITTEN.items():
        if path.is_relative_to(ROOT / folder):
            return [str(Path("geoplex") / name / path.relative_to(ROOT / folder))]
    if path.is_relative_to(ROOT / "bench"):
        return [str(path.relative_to(ROOT))]
    return [arg]


CHECKED_FOLDERS = ("servers", "clients", "tools", "infra", "bench", "tests", "scripts")
IGNORE_MARK = "type: " + "ignore"  # spelled in two parts so this file does not match itself


def ignores() -> list[str]:
    """Every ignore comment in the hand-written code: none is allowed (fix what it hides)."""
    found = []
    for folder in CHECKED_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if IGNORE_MARK in line:
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    return found


def main(argv: list[str]) -> int:
    if not argv and (found := ignores()):
        print("\n".join(found), file=sys.stderr)
        print(f"{len(found)} `# {IGNORE_MARK}` comments: type the code instead", file=sys.stderr)
        return 1
    tree = lay_out_tree()
    if argv:
        args = [mapped for arg in argv for mapped in translate(arg)]
    else:
        # as folders of TREE: mypy takes packages (-p) or files, not both in one run
        args = [str(Path(*package.split("."))) for package in DEFAULT_PACKAGES]
        args += [source for folder in DEFAULT_FOLDERS for source in sources_in(ROOT / folder)]
    command = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
               "--cache-dir", str(ROOT / ".venv" / "mypy_cache"), "--explicit-package-bases",
               *args]
    env = {**os.environ, "MYPYPATH": os.pathsep.join(pytest_roots())}
    done = subprocess.run(command, cwd=tree, env=env, check=False)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
