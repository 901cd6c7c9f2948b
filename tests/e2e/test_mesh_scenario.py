"""The whole mesh as one system, under faults: `geoplex up` runs every service; presence
users move and owners edit businesses while one process of each service (and one broker)
is killed with SIGKILL and restarted by the supervisor, telemetry last, and Redis is killed
and restarted by `geoplex up`; meanwhile navigation drivers (`geoplex maps simulate`) report
their fixes to maps, and an arterial of Gothenburg is slowed. Then: each
acknowledged location update (``update(..., acknowledged=True)``) is in the history
exactly once; every acknowledged edit was published (one event id each); the router's ETA through
the slowed road rose (fixes -> maps -> broker -> traffic -> routing, through the kills of
all three); the kills were alerted
by email and InstanceDown resolved; telemetry has data for every service; no location is in
any log; Ctrl-C stops every process.

Bounded: ~2-3 minutes on the 2-core machine (the routing graphs come from the session's
cache). The counts are printed for the closing notes (pytest -s).
"""

from __future__ import annotations

import asyncio
import email
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from geoplex.clients import ChannelOptions
from geoplex.clients.broker import BrokerClient
from geoplex.clients.maps import MapsClient
from geoplex.clients.notifier import NotifierClient
from geoplex.clients.routing import RoutingClient
from geoplex.clients.proximity import ProximityClient
from geoplex.clients.presence import PresenceClient
from geoplex.clients.registry import MeshRegistry, Registration
from geoplex.infra import data
from geoplex.notifier.v1 import notifier_pb2 as nf
from geoplex.proximity.v1 import proximity_pb2 as pb
from geoplex.servers._runtime.auth import DEV_SECRET, mint_token
from geoplex.servers.telemetry.rules.files import DEFAULT_RULES
from geoplex.tools.navsim import NavConfig, road_classes, simulate
from geoplex.tools.navsim.run import NavResult
from geoplex.type.v1.geo_pb2 import LatLng
from broker_cluster import stable_port
from mesh_flows import descendants, read_topic
from polling import eventually

pytestmark = pytest.mark.timeout(600)
HOME = (60.1699, 24.9384)                 # Helsinki
METRE = 1 / 111_194.93
SERVICES = ("proximity", "presence", "broker", "routing", "maps", "telemetry", "notifier")
KILLED = ("presence-1", "proximity-2", "broker-2", "routing-1", "maps-1", "notifier-2")
# (and then telemetry-1, once the others are back)


def spot(n: int) -> tuple[float, float]:
    """alice's n-th position: n metres north of HOME (0.1 m apart, all distinct)."""
    return round(HOME[0] + n * 0.1 * METRE, 7), HOME[1]


class Mesh:
    def __init__(self, state: Path, log: Path) -> None:
        self.state, self.log = state, log
        info = json.loads((state / "mesh.json").read_text())
        self.etcd: list[str] = info["etcd"].split(",")
        self.targets: dict[str, str] = {k: v.split(",")[0] for k, v in info["targets"].items()}
        self.brokers: str = info["targets"]["broker"]
        self.http: dict[str, str] = info["http"]
        self.mongo: str = info["backends"]["GEOPLEX_MONGO_URI"]
        self.redis: str = info["backends"]["GEOPLEX_REDIS_URL"]

    async def processes(self) -> list[Registration]:
        async with MeshRegistry(self.etcd) as registry:
            return await registry.processes()

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = (f"http://{self.http['telemetry']}/api/v1/query?"
               + urllib.parse.urlencode({"query": promql}))
        with urllib.request.urlopen(url, timeout=10) as response:
            result: list[dict[str, Any]] = json.loads(response.read())["data"]["result"]
        return result

    def mails(self) -> list[email.message.Message]:
        folder = self.state / "mail"
        if not folder.is_dir():
            return []
        return [email.message_from_bytes(p.read_bytes()) for p in sorted(folder.glob("*.eml"))]


def start_up(tmp_path: Path, routing_cache: Path) -> tuple[subprocess.Popen[bytes], Mesh]:
    rules = tmp_path / "rules.yml"   # the packaged rules, InstanceDown at test speed
    text = DEFAULT_RULES.read_text()
    rules.write_text(text.replace('expr: up{slot!=""} == 0\n        for: 15s',
                                  'expr: up{slot!=""} == 0\n        for: 1s'))
    env = {k: v for k, v in os.environ.items()
           if k not in ("GEOPLEX_REDIS_URL", "GEOPLEX_MONGO_URI", "GEOPLEX_ETCD_ENDPOINTS")}
    # below the ephemeral range: no client connection takes one while its server restarts
    env.update({f"GEOPLEX_{name.upper()}_PORT": str(stable_port()) for name in SERVICES})
    env.update({
        "PYTHONUNBUFFERED": "1", "GEOPLEX_ROUTING_CACHE_DIR": str(routing_cache),
        "GEOPLEX_MAPS_HTTP_PORT": str(stable_port()),
        "GEOPLEX_TELEMETRY_HTTP_PORT": str(stable_port()),
        "GEOPLEX_TELEMETRY_RULE_FILES": str(rules),
        "GEOPLEX_TELEMETRY_RULE_INTERVAL_SECONDS": "1",
        "GEOPLEX_TELEMETRY_MESH_PROBE_SECONDS": "1",
        "GEOPLEX_METRICS_INTERVAL_SECONDS": "2",
        "GEOPLEX_REGISTRY_TTL_SECONDS": "3",
        "GEOPLEX_NOTIFIER_GROUP_WAIT": "1s", "GEOPLEX_NOTIFIER_GROUP_INTERVAL": "2s",
        "GEOPLEX_PRESENCE_HISTORY_FLUSH_SECONDS": "0.2",
        # live traffic at test speed (as in tests/integration/maps/test_congestion_scenario)
        "GEOPLEX_MAPS_TRAFFIC_INTERVAL_SECONDS": "1", "GEOPLEX_MAPS_TRAFFIC_WINDOW_SECONDS": "20",
        "GEOPLEX_MAPS_TRAFFIC_VALID_SECONDS": "15", "GEOPLEX_ROUTING_TRAFFIC_REFRESH_SECONDS": "1"})
    log = tmp_path / "up.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "geoplex"), "up",
                                 "--state-dir", str(tmp_path / "state")], env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    while "Geoplex is up" not in log.read_text():
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)
    return proc, Mesh(tmp_path / "state", log)


def alert_state(mesh: Mesh) -> dict[str, Any]:
    """What telemetry and each notifier node hold of InstanceDown (for a failure's message)."""
    async def held() -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for entry in await mesh.processes():
            if entry.service != "notifier":
                continue
            async with NotifierClient(entry.address, ChannelOptions(retry=False)) as client:
                listed = await client.list_alerts('{alertname="InstanceDown"}',
                                                  include_resolved=True)
            out[entry.slot or entry.instance] = [
                f"{a.alert.labels.get('slot')} {nf.AlertState.Name(a.state)} ends "
                f"{a.alert.ends_at.ToSeconds() - time.time():+.0f} s" for a in listed.alerts]
        return out
    state: dict[str, Any] = {}
    for name, promql in (("telemetry ALERTS", 'ALERTS{alertname="InstanceDown"}'),
                         ("up == 0", 'up == 0')):
        try:
            state[name] = [r["metric"] for r in mesh.query(promql)]
        except OSError as error:
            state[name] = repr(error)
    try:
        state["notifiers"] = asyncio.run(held())
    except Exception as error:  # noqa: BLE001 - a diagnosis, not the test
        state["notifiers"] = repr(error)
    return state


def redis_pid(mesh: Mesh) -> int | None:
    """The redis-server geoplex up runs for this mesh (its title names its port)."""
    port = urllib.parse.urlsplit(mesh.redis).port
    out = subprocess.run(["ps", "-e", "-o", "pid=,args="], capture_output=True, text=True)
    for line in out.stdout.splitlines():
        pid, _, args = line.strip().partition(" ")
        if args.split(" ")[0].endswith("redis-server") and f":{port}" in args:
            return int(pid)
    return None


async def all_serving(mesh: Mesh, killed: dict[str, int]) -> bool:
    """Every slot serving, each killed one by a new process."""
    found = {p.slot: p for p in await mesh.processes()
             if p.health == "serving"}
    ups = {r["metric"]["slot"]: r["value"][1] for r in mesh.query("up")}
    return (all(slot in found and found[slot].pid != pid for slot, pid in killed.items())
            and bool(ups) and all(v == "1" for v in ups.values()))


def navigation(mesh: Mesh, classes: dict[int, str]) -> NavConfig:
    """A dozen drivers in Gothenburg, half of them through an arterial slowed to a
    quarter of its speed from 15 s on; the run ends once the probe's ETA has risen (or
    after ~3 minutes, when the assertion below fails)."""
    return NavConfig(maps=mesh.targets["maps"], routing=mesh.targets["routing"],
                     auth_secret=DEV_SECRET, drivers=12, congestion_start_s=15.0,
                     congestion_s=160.0, duration_s=180.0, fraction=0.25, seed=1,
                     stop_after_rise_s=2.0, accuracy_drivers=0)


async def scenario(mesh: Mesh, classes: dict[int, str]) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    alice, bob, owner = f"alice-{tag}", f"bob-{tag}", f"owner-{tag}"
    presence = mesh.targets["presence"]

    def client_as(user: str) -> PresenceClient:
        return PresenceClient(presence, ChannelOptions(token=mint_token(DEV_SECRET, user)))

    sent: list[int] = []
    created: list[str] = []
    refused = answered = 0
    stop = asyncio.Event()
    async with client_as(alice) as pa, client_as(bob) as pb_, ProximityClient(
            mesh.targets["proximity"], ChannelOptions(token=mint_token(DEV_SECRET, owner))
    ) as px:
        for c in (pa, pb_):
            await c.set_sharing(True)
        await pa.add_friend(bob)

        async def walk() -> None:
            async with pa.live(*spot(0)) as live, pb_.live(*HOME):
                n = 0
                while not stop.is_set():
                    n += 1
                    try:  # returns once the history has it (the broker acknowledged it)
                        await live.update(*spot(n), acknowledged=True, ack_timeout=5)
                        sent.append(n)
                    except Exception:  # noqa: BLE001 - not acknowledged: kept or not
                        pass
                    await asyncio.sleep(0.05)

        async def edit() -> None:
            nonlocal refused
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    made = await px.create(pb.Business(
                        name=f"E2E {tag} {n}", category="cafe",
                        location=LatLng(latitude=HOME[0] + 0.001 * (n % 50),
                                        longitude=HOME[1])), timeout=5)
                    created.append(made.id)
                except Exception:  # noqa: BLE001 - not acknowledged: may or may not exist
                    refused += 1
                await asyncio.sleep(0.2)

        async def route_and_geocode() -> None:
            nonlocal answered
            async with RoutingClient(mesh.targets["routing"]) as ro, \
                    MapsClient(mesh.targets["maps"]) as mp:
                while not stop.is_set():
                    for call in (ro.route((60.1686, 24.9414), (60.1760, 24.9496), timeout=5),
                                 mp.geocode("Mannerheimintie, Helsinki", timeout=5)):
                        try:
                            await call
                            answered += 1
                        except Exception:  # noqa: BLE001 - its server is restarting
                            pass
                    await asyncio.sleep(0.3)

        driving = asyncio.Event()
        drive = asyncio.create_task(simulate(navigation(mesh, classes), classes=classes,
                                             progress=lambda _tick: driving.set()))
        await eventually(driving.is_set, 120, what="the drivers on the road", every=0.2)
        tasks = [asyncio.create_task(walk()), asyncio.create_task(edit()),
                 asyncio.create_task(route_and_geocode())]
        await asyncio.sleep(5)
        before = {p.slot: p.pid for p in await mesh.processes()}
        killed = {slot: before[slot] for slot in KILLED}
        for slot, pid in killed.items():            # one process of each service, a broker
            os.kill(pid, signal.SIGKILL)
            await asyncio.sleep(1.0)
        redis = redis_pid(mesh)                     # and Redis: geoplex up restarts it
        assert redis is not None, "no redis-server of this mesh"
        os.kill(redis, signal.SIGKILL)
        await eventually(lambda: redis_pid(mesh) not in (None, redis), 60,
                         what="Redis restarted by geoplex up", every=0.5)
        await eventually(lambda: all_serving(mesh, killed), 180, ignore=(OSError,),
                         what="every killed slot serving again", every=1.0)
        # last, telemetry itself: its store replays its WAL
        killed["telemetry-1"] = before["telemetry-1"]
        os.kill(killed["telemetry-1"], signal.SIGKILL)
        await eventually(lambda: all_serving(mesh, killed), 120, ignore=(OSError,),
                         what="telemetry serving again", every=1.0)
        settled = len(sent)
        await asyncio.sleep(8)                      # after the faults: all of these count
        stop.set()
        await asyncio.gather(*tasks)
        nav: NavResult = await drive
    return {"tag": tag, "alice": alice, "sent": sent, "settled": settled,
            "created": created, "refused": refused, "killed": killed, "answered": answered,
            "nav": nav}


async def history_positions(mesh: Mesh, user: str) -> list[dict[str, Any]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mesh.mongo)
    try:
        return [d async for d in client["geoplex"]["location_history"].find({"user": user})]
    finally:
        await client.close()


async def topic_size(mesh: Mesh, topic: str) -> int:
    async with BrokerClient(mesh.brokers.split(",")) as client:
        return sum((await client.list_offsets(topic, timeout=10)).values())


async def business_events(mesh: Mesh) -> list[dict[str, Any]]:
    return [json.loads(v) for v in await read_topic(mesh.brokers.split(","), "business-events",
                                                     idle_s=5.0)]


def test_the_mesh_loses_nothing_acknowledged_under_kills_and_says_so(
        tmp_path: Path, routing_cache: Path, routing_regions: dict[str, Any]) -> None:
    """(``routing_regions``: the session's graphs built into ``routing_cache`` first, so
    routing loads them in seconds, as on a warm cache.)"""
    classes = road_classes(data.fetch(["gothenburg"], progress=lambda _m: None)
                           ["gothenburg"]["network"])
    started = time.monotonic()
    proc, mesh = start_up(tmp_path, routing_cache)
    up_s = time.monotonic() - started
    try:
        result = asyncio.run(scenario(mesh, classes))
        sent, settled = result["sent"], result["settled"]

        # live traffic: the drivers' fixes reached the router through maps, the broker and
        # the traffic group, kills and all, and the ETA through the slowed road rose
        nav: NavResult = result["nav"]
        assert nav.counters.batches > 0
        assert nav.summary.eta_rise_s is not None, [k.probe_ratio for k in nav.ticks]

        # presence history: every acknowledged update stored, faults and all, none twice
        def stored() -> list[dict[str, Any]]:
            return asyncio.run(history_positions(mesh, result["alice"]))
        deadline = time.monotonic() + 60
        rows = stored()
        while not {round((r["lat"] - HOME[0]) / METRE / 0.1) for r in rows} >= set(sent):
            assert time.monotonic() < deadline, "an acknowledged update is not in the history"
            time.sleep(0.5)
            rows = stored()
        positions = [round((r["lat"] - HOME[0]) / METRE / 0.1) for r in rows]
        assert len({r["_id"] for r in rows}) == len(rows)
        assert len(set(positions)) == len(positions), "a location stored twice"
        assert set(sent) <= set(positions)

        # business edits: every acknowledged create published, one event id each
        events = asyncio.run(business_events(mesh))
        created_events = [e for e in events if e["kind"] == "created"
                          and e["business_id"] in set(result["created"])]
        by_business: dict[str, set[str]] = {}
        for e in created_events:
            by_business.setdefault(e["business_id"], set()).add(e["id"])
        assert set(by_business) == set(result["created"])
        assert all(len(ids) == 1 for ids in by_business.values())

        # alerts: the kills paged by email, InstanceDown resolved once the slots were back
        def subjects() -> list[str]:
            return [str(m["Subject"]) for m in mesh.mails()]
        deadline = time.monotonic() + 90
        while not (any("InstanceCrashed" in s for s in subjects())
                   and any("RESOLVED" in s and "InstanceDown" in s for s in subjects())):
            assert time.monotonic() < deadline, (subjects(), alert_state(mesh))
            time.sleep(1.0)

        # telemetry was killed last: what it held before (the deaths it counted) survived
        # in its WAL
        counted = {r["metric"]["slot"] for r in mesh.query(
            "max_over_time(geoplex_mesh_unclean_exits_total[10m]) > 0")}
        assert set(KILLED) <= counted, counted

        # the dashboard's queries have every service
        def jobs() -> set[str]:
            return {r["metric"]["job"] for r in mesh.query(
                "sum by (job) (rate(rpc_server_call_duration_seconds_count[1m]))")}
        deadline = time.monotonic() + 60
        while not set(SERVICES) <= jobs():   # (pushes resume within seconds of its restart)
            assert time.monotonic() < deadline, jobs()
            time.sleep(1.0)
        assert {r["metric"]["job"] for r in mesh.query("up")} == set(SERVICES)
        # geoplex up's host agent pushes the machine's series (the dashboard's host panels)
        deadline = time.monotonic() + 60
        while not all(mesh.query(q) for q in ("node_memory_MemAvailable_bytes",
                                              'node_cpu_seconds_total{mode="idle"}',
                                              "node_processes_pids")):
            assert time.monotonic() < deadline, "no host series from geoplex up's agent"
            time.sleep(1.0)
        # ...the services' own through the broker (the broker's and telemetry's direct)
        metric_records = asyncio.run(topic_size(mesh, "telemetry-metrics"))
        assert metric_records > 0

        # no location in any log
        logs = "".join(p.read_text(errors="replace")
                       for p in (mesh.state / "logs").glob("*.log")) + mesh.log.read_text()
        for n in sent[:: max(1, len(sent) // 20)]:
            lat, _ = spot(n)
            assert f"{lat:.6f}" not in logs and repr(lat) not in logs

        print(f"\ne2e: geoplex up in {up_s:.0f} s; presence updates acknowledged {len(sent)}, "
              f"stored {len(rows)} (all acknowledged stored, none twice; "
              f"{len(sent) - settled} after the faults); edits acknowledged {len(result['created'])}, published "
              f"{len(by_business)} (events read {len(events)}), refused during faults "
              f"{result['refused']}; routes and geocodes answered {result['answered']}; "
              f"navigation: {nav.counters.fixes} fixes in {nav.counters.batches} batches "
              f"({nav.counters.failed} failed), ETA +{nav.summary.peak_ratio - 1:.0%} "
              f"{nav.summary.eta_rise_s:.0f} s after the slow-down; "
              f"metric exports through the broker {metric_records}; "
              f"killed {', '.join(result['killed'])}; mails "
              f"{len(subjects())}: {sorted(set(subjects()))}")
    finally:
        children = descendants(proc.pid)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert proc.returncode == 0
    time.sleep(0.5)
    alive = []
    for pid in children:
        try:
            os.kill(pid, 0)
            alive.append(pid)
        except ProcessLookupError:
            pass
    assert alive == []
