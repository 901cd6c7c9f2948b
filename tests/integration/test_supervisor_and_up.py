"""`geoplex up` and its supervisor, as a person would run them."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from geoplex.tools.supervisor import ProcessSpec, Supervisor
from mesh_flows import descendants

CHILD = ("import os, signal, time, sys\n"
         "print(f'child ready on {os.getpid()}', flush=True)\n"
         "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
         "time.sleep(600)\n")


async def test_supervisor_restarts_a_crashed_process_and_stops_all():
    lines: list[str] = []
    sup = Supervisor([ProcessSpec("a", [sys.executable, "-c", CHILD], {}),
                      ProcessSpec("b", [sys.executable, "-c", CHILD], {})],
                     output=lines.append, max_backoff=1.0)
    await sup.start()
    before = sup.pids()
    os.kill(before["a"], signal.SIGKILL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        now = sup.pids()
        if now.get("a") not in (None, before["a"]) and any("a restarted" in x for x in lines):
            break
        await asyncio.sleep(0.1)
    after = sup.pids()
    assert after["a"] != before["a"] and after["b"] == before["b"]
    assert any("a exited with code -9" in line for line in lines)
    await sup.stop()
    for pid in after.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


# a child that, on SIGTERM, notes when it got it, takes 0.5 s to finish and notes its exit
ROUNDS_CHILD = ("import os, signal, sys, time\n"
                "mark = sys.argv[1]\n"
                "def term(*_):\n"
                "    open(mark, 'a').write(f'term {time.monotonic()}\\n')\n"
                "    time.sleep(0.5)\n"
                "    open(mark, 'a').write(f'exit {time.monotonic()}\\n')\n"
                "    sys.exit(0)\n"
                "signal.signal(signal.SIGTERM, term)\n"
                "print(f'child ready on {os.getpid()}', flush=True)\n"
                "time.sleep(600)\n")


async def test_the_supervisor_stops_its_processes_in_rounds_of_stop_order(
        tmp_path: Path) -> None:
    marks = {name: tmp_path / f"{name}.txt" for name in ("writer", "sink", "store")}
    sup = Supervisor([ProcessSpec("store", [sys.executable, "-c", ROUNDS_CHILD,
                                            str(marks["store"])], {}, stop_order=2),
                      ProcessSpec("writer", [sys.executable, "-c", ROUNDS_CHILD,
                                             str(marks["writer"])], {}),
                      ProcessSpec("sink", [sys.executable, "-c", ROUNDS_CHILD,
                                           str(marks["sink"])], {}, stop_order=1)],
                     output=lambda line: None)
    await sup.start()
    await sup.stop()
    seen = {name: dict(line.split() for line in path.read_text().splitlines())
            for name, path in marks.items()}
    # each round is told to stop only once the round before has exited
    assert float(seen["writer"]["exit"]) < float(seen["sink"]["term"])
    assert float(seen["sink"]["exit"]) < float(seen["store"]["term"])


@pytest.mark.timeout(300)
def test_geoplex_up_serves_helsinki_and_stops_cleanly_on_ctrl_c(tmp_path: Path,
                                                               routing_cache: Path,
                                                               routing_regions: object):
    # routing_regions: the session's graphs built into routing_cache first (a warm cache)
    bindir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items()
           if k not in ("GEOPLEX_REDIS_URL", "GEOPLEX_MONGO_URI", "GEOPLEX_ETCD_ENDPOINTS")}
    env.update({"PYTHONUNBUFFERED": "1", "GEOPLEX_PROXIMITY_PORT": str(_free_port()),
                "GEOPLEX_BROKER_PORT": str(_free_port()),
                "GEOPLEX_ROUTING_PORT": str(_free_port()),
                # the session's routing graphs, so they are not built once more
                "GEOPLEX_ROUTING_CACHE_DIR": str(routing_cache)})
    log = tmp_path / "up.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(bindir / "geoplex"), "up", "--state-dir",
                                 str(tmp_path / "state")], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while "Geoplex is up" not in log.read_text():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        target = f"127.0.0.1:{env['GEOPLEX_PROXIMITY_PORT']}"
        listed = subprocess.run([str(bindir / "grpcurl"), "-plaintext", target, "list"],
                                capture_output=True, text=True, timeout=30)
        assert "geoplex.proximity.v1.ProximityService" in listed.stdout
        found = subprocess.run(
            [str(bindir / "grpcurl"), "-plaintext", "-d",
             '{"location":{"latitude":60.17051,"longitude":24.95233},"radius_meters":500}',
             target, "geoplex.proximity.v1.ProximityService/SearchNearbyBusinesses"],
            capture_output=True, text=True, timeout=30)
        assert "Helsingin tuomiokirkko" in found.stdout
        broker = f"127.0.0.1:{env['GEOPLEX_BROKER_PORT']}"  # a broker node, its logs in the state dir
        created = subprocess.run(
            [str(bindir / "grpcurl"), "-plaintext", "-d",
             '{"topic":{"name":"up-check","partitions":2}}', broker,
             "geoplex.broker.v1.BrokerService/CreateTopic"],
            capture_output=True, text=True, timeout=30)
        assert '"name": "up-check"' in created.stdout, created.stderr
        # three broker nodes, each with its own data directory; replicas on every one (the
        # other two make theirs once etcd's watch tells them of the topic)
        replicas = [tmp_path / "state" / f"broker-{node}" / "up-check-1" for node in (1, 2, 3)]
        deadline = time.monotonic() + 30
        while not all(r.is_dir() for r in replicas):
            assert time.monotonic() < deadline, [r for r in replicas if not r.is_dir()]
            time.sleep(0.2)
        routing = f"127.0.0.1:{env['GEOPLEX_ROUTING_PORT']}"  # the three regions
        regions = subprocess.run(
            [str(bindir / "grpcurl"), "-plaintext", routing,
             "geoplex.routing.v1.RoutingService/ListRegions"],
            capture_output=True, text=True, timeout=30)
        for region in ("monaco", "helsinki", "gothenburg"):
            assert f'"name": "{region}"' in regions.stdout, regions.stderr
        routed = subprocess.run(
            [str(bindir / "grpcurl"), "-plaintext", "-d",
             '{"origin":{"latitude":60.1686,"longitude":24.9414},'
             '"destination":{"latitude":60.1760,"longitude":24.9496}}', routing,
             "geoplex.routing.v1.RoutingService/ComputeRoute"],
            capture_output=True, text=True, timeout=30)
        assert '"distance_meters"' in routed.stdout and "TYPE_ARRIVE" in routed.stdout
        children = descendants(proc.pid)
        assert len(children) >= 5  # redis, mongo, etcd, two proximity processes
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        assert proc.wait(60) == 0
        time.sleep(0.5)
        assert [pid for pid in children if _alive(pid)] == []
        text = log.read_text()
        assert "redis-server: stopped" in text and "proximity-1" in text
        assert "60.17051" not in text and "24.95233" not in text  # never logged
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _free_port() -> int:
    from geoplex.infra.local import free_port

    return free_port()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"
