"""The dashboard on a real telemetry process, in Debian's Chromium (playwright-core from
tests/browser, driven by dashboard_page.mjs): the page loads without console errors, the
requests/s panel draws its lines, panels without data say "no data", a typed query
draws, the silences of the notifier show (their text as text), and without the chart
library the page says how to install it."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from dashboard_mesh import HTML_COMMENT, Telemetry
from geoplex.servers.telemetry.dashboard import VENDOR_DIR, VENDOR_FILES

HERE = Path(__file__).resolve().parent
BROWSER_DIR = HERE.parents[1] / "browser"
FIRST_LINE_RGB = (0x1F, 0x77, 0xB4)     # app.js COLOURS[0]
SECOND_LINE_RGB = (0xFF, 0x7F, 0x0E)    # COLOURS[1]
QUERY = "sum by (job) (process_resident_memory_bytes)"


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def colour_share(image: Image.Image, colour: tuple[int, int, int]) -> float:
    rgb = np.asarray(image.convert("RGB"), dtype=np.int32)
    return float((np.abs(rgb - np.array(colour)).sum(axis=2) < 60).mean())


def test_the_page_and_its_files_are_served_with_a_strict_policy(telemetry: Telemetry) -> None:
    for path in ("/", "/dashboard"):
        status, headers, body = get(telemetry.http + path)
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        assert b"/dashboard/static/app.js" in body
    for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        status, headers, _ = get(f"{telemetry.http}/dashboard/static/{name}")
        assert status == 200 and kind in headers["Content-Type"]
    for name in ("index.html", "__init__.py", "..%2F__init__.py", ".gitignore"):
        assert get(f"{telemetry.http}/dashboard/static/{name}")[0] == 404, name
    status, _, body = get(telemetry.http + "/dashboard/config.json")
    assert status == 200 and json.loads(body)["notifiers"] == 1


def test_silences_come_from_the_notifier_nodes_as_json(telemetry: Telemetry) -> None:
    status, _, body = get(telemetry.http + "/api/v1/silences")
    answer = json.loads(body)
    assert status == 200 and answer["status"] == "success", answer
    silences = answer["data"]["silences"]
    assert [s["id"] for s in silences] == ["s-1", "s-2"]   # both pages, by end time
    first = silences[0]
    assert first["status"]["state"] == "active" and first["createdBy"] == "ops@example.org"
    assert first["matchers"][1] == {"name": "job", "value": "geoplex-.*", "isRegex": True,
                                    "isEqual": True}
    assert first["text"] == '{alertname="HighLatency", job=~"geoplex-.*"}'
    assert first["endsAt"].endswith("Z") and silences[1]["status"]["state"] == "pending"


def test_dashboard_draws_panels_and_a_typed_query_in_chromium(telemetry: Telemetry,
                                                               tmp_path: Path) -> None:
    node, chromium = shutil.which("node"), shutil.which("chromium")
    assert node and chromium, "make test installs node and Debian's chromium (browser-deps)"
    assert (BROWSER_DIR / "node_modules" / "playwright-core").is_dir(), \
        "make browser-deps installs playwright-core into tests/browser"
    assert all((VENDOR_DIR / name).is_file() for name in VENDOR_FILES), \
        "make browser-deps installs uPlot into servers/telemetry/dashboard/vendor"
    done = subprocess.run(
        [node, str(HERE / "dashboard_page.mjs"), telemetry.http + "/dashboard", str(tmp_path),
         QUERY], capture_output=True, text=True, timeout=150,
        env={"CHROMIUM": chromium, "BROWSER_DIR": str(BROWSER_DIR), "PATH": ""})
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = json.loads((tmp_path / "report.json").read_text())

    errors = [m for m in report["console"] if m["type"] in ("error", "warning")]
    assert not errors and not report["pageErrors"], (errors, report["pageErrors"])
    assert not report["failedRequests"], report["failedRequests"]
    assert not report["badResponses"], report["badResponses"]
    # the fixture's rules (dashboard_mesh.RULES): one alert firing, one pending
    assert report["alertsStatus"] == "1 firing, 1 pending"
    assert report["alertCells"][:3] == ["MeshBusy", '{severity="info"}', "firing"]
    assert "<b>busy</b> mesh" in report["alertCells"] and report["alertElements"] == 0

    state = report["state"]
    assert state["library"] is True
    panels = state["panels"]
    assert panels["rps"] == {"state": "drawn", "series": 3}
    assert panels["errors"]["state"] == panels["p99"]["state"] == "drawn"
    assert panels["cpu"] == {"state": "drawn", "series": 2}
    assert panels["lag"] == {"state": "no data", "series": 0}   # no broker in this mesh
    assert report["panelStatus"]["panel-lag"] == "no data"
    # the legend names the series by what differs between them: the job
    assert sorted(report["legend"]) == [f"job={j}" for j in
                                        ("geoplex-maps", "geoplex-proximity", "geoplex-routing")]

    # the chart drew the lines: the canvas has pixels of the first and second line colour
    panel = Image.open(tmp_path / "panel.png")
    assert colour_share(panel, FIRST_LINE_RGB) > 0.002
    assert colour_share(panel, SECOND_LINE_RGB) > 0.001
    page = Image.open(tmp_path / "page.png")
    box = report["panelCanvas"]
    canvas = page.crop((int(box["x"]), int(box["y"]), int(box["x"] + box["width"]),
                        int(box["y"] + box["height"])))
    background = colour_share(canvas, (0xFF, 0xFF, 0xFF))
    assert 0.5 < background < 0.995          # mostly white, and not empty
    assert colour_share(canvas, FIRST_LINE_RGB) > 0.002

    # the query box: typed, run, drawn, one line per job
    assert report["queryState"] == {"runs": 1, "state": "drawn", "series": 3}
    assert report["queryStatus"].startswith("3 series")
    assert sorted(report["queryLegend"]) == sorted(report["legend"])
    assert colour_share(Image.open(tmp_path / "query.png"), FIRST_LINE_RGB) > 0.002

    # the silences, their HTML shown as text and never made into elements
    assert report["silencesStatus"] == "2 silence(s)"
    assert HTML_COMMENT in report["silenceCells"]
    assert report["silenceElements"] == 0

    # without the chart library: a clear message, the rest of the page still works
    bare = report["bare"]
    assert bare["noticeVisible"] and "chart library (uPlot) is not installed" in bare["notice"]
    assert "make browser-deps" in bare["notice"]
    assert bare["canvases"] == 0 and not bare["pageErrors"]
    assert bare["alertsStatus"].startswith("alerting off")
    assert bare["state"]["panels"]["rps"] == {"state": "no library", "series": 3}
    assert bare["state"]["panels"]["lag"]["state"] == "no data"


@pytest.mark.parametrize("name", ["uPlot.iife.min.js", "uPlot.min.css"])
def test_the_chart_library_is_served_from_the_fetched_package(telemetry: Telemetry,
                                                              name: str) -> None:
    status, headers, body = get(f"{telemetry.http}/dashboard/vendor/{name}")
    assert status == 200 and len(body) > 1000 and "max-age" in headers["Cache-Control"]
    assert get(f"{telemetry.http}/dashboard/vendor/package.json")[0] == 404
