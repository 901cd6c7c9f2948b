"""Generated code is fresh, the protos lint, and the wheel installs one package: geoplex.

The wheel test builds from a copy of the source tree (so no ``build/`` or
``*.egg-info`` is written into the working tree others edit), installs the
wheel into a fresh venv without system site-packages, and runs it from a
directory where the source tree is not importable.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
IGNORED = shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "__pycache__",
                                 "*.pyc", ".geoplex", ".pytest_cache", ".mypy_cache", "tests")


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


def test_generated_code_is_what_gen_protos_writes_today(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_protos.py"),
                             "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr

    fresh, checked_in = _files(tmp_path), _files(ROOT / "gen")

    assert sorted(fresh) == sorted(checked_in), "gen/ has missing or extra files: run `make gen`"
    stale = [name for name in fresh if fresh[name] != checked_in[name]]
    assert stale == [], f"gen/ is stale in {stale}: run `make gen`"


def test_a_failed_generation_leaves_the_previous_code_in_place(tmp_path: Path) -> None:
    protos = tmp_path / "protos"
    shutil.copytree(ROOT / "protos", protos)
    (protos / "geoplex" / "mesh" / "v1" / "broken.proto").write_text(
        'syntax = "proto3";\npackage geoplex.mesh.v1;\nmessage Broken { NoSuchType field = 1; }\n')
    out = tmp_path / "out"
    (out / "geoplex").mkdir(parents=True)
    (out / "geoplex" / "previous.py").write_text("# the code generated last time\n")

    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_protos.py"),
                             "--protos", str(protos), "--out", str(out)],
                            capture_output=True, text=True, timeout=120)

    assert result.returncode != 0
    assert "the generated code is unchanged" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["geoplex"]
    assert [p.name for p in (out / "geoplex").iterdir()] == ["previous.py"]


def test_buf_lint_passes() -> None:
    result = subprocess.run([str(BIN / "buf"), "lint"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)

    assert result.returncode == 0, result.stdout + result.stderr


def _run(argv: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, (f"{' '.join(argv)} exited {result.returncode}:\n"
                                    f"{result.stdout}\n{result.stderr}")
    return result


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_wheel_installs_only_the_geoplex_package_and_its_command(tmp_path: Path) -> None:
    timings: dict[str, float] = {}
    source, dist, venv, elsewhere = (tmp_path / n for n in ("src", "dist", "venv", "elsewhere"))
    shutil.copytree(ROOT, source, ignore=IGNORED)
    elsewhere.mkdir()

    started = time.monotonic()
    _run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(source)], source)
    timings["build"] = time.monotonic() - started
    wheels = list(dist.glob("geoplex-*.whl"))
    assert len(wheels) == 1

    started = time.monotonic()
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path)
    timings["venv"] = time.monotonic() - started
    python = venv / "bin" / "python"
    started = time.monotonic()
    # the wheel alone; its dependencies are the ones this environment installed from
    # pyproject.toml, seen through a .pth after the venv's own site-packages (so geoplex
    # comes from the wheel), and `pip check` says whether they satisfy what the wheel
    # declares: the same check as installing them again, without a minute and a half
    # of unpacking numpy, scipy and the rest
    # (this environment's pip, run for the venv's python: the venv has neither pip nor
    # an old setuptools of its own to shadow the one the dependencies need)
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    _run([*pip, "install", "--quiet", "--no-deps", str(wheels[0])], tmp_path, 540)
    timings["pip install"] = time.monotonic() - started
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                     elsewhere).stdout.strip())
    (site / "zz_geoplex_test_dependencies.pth").write_text(
        f"{sysconfig.get_path('purelib')}\n")
    checked = _run([*pip, "check"], elsewhere)
    assert "No broken requirements" in checked.stdout, checked.stdout
    print("wheel test timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))

    assert (site / "geoplex").is_dir()
    for stray in ("servers", "clients", "gen", "infra", "tools", "tests", "scripts", "protos", "bench"):
        assert not (site / stray).exists(), f"wheel installed a top-level {stray!r}"
    record = (site / "geoplex-0.1.0.dist-info" / "RECORD").read_text().splitlines()
    installed = {line.split(",", 1)[0].split("/", 1)[0] for line in record}
    assert installed <= {"geoplex", "geoplex-0.1.0.dist-info", "..", "__pycache__"}, installed

    helped = _run([str(venv / "bin" / "geoplex"), "--help"], elsewhere)
    assert "up" in helped.stdout.split()

    imported = _run([str(python), "-c",
                     "import geoplex.proximity.v1.proximity_pb2, geoplex.servers._runtime, "
                     "geoplex.clients.channel, geoplex.tools.cli, geoplex.infra.local; "
                     "print(geoplex.servers._runtime.__file__)"], elsewhere)
    assert Path(imported.stdout.strip()).is_relative_to(site)
    assert (site / "geoplex" / "py.typed").is_file()
    assert (site / "geoplex" / "mesh" / "v1" / "mesh_pb2.pyi").is_file()
