"""The packaged rules (``default_rules.yml``) over a real store, on an injected clock: each
rule below fires on the series it watches once its ``for`` has passed, with the labels its
notification names, and stays quiet on a healthy series of the same name beside it."""

from __future__ import annotations

from collections.abc import Callable

from geoplex.servers.telemetry.promql.engine import Engine
from geoplex.servers.telemetry.rules import DEFAULT_RULES, AlertState, RuleManager
from geoplex.servers.telemetry.rules.evaluator import AlertingRule
from geoplex.servers.telemetry.tsdb import TSDB
from test_rule_evaluation import Clock, store  # noqa: F401 - the store fixture, shared

T0 = 1_700_000_000_000  # ms
S, MIN = 1000, 60_000
STEP = 15 * S           # the samples' interval and the groups' (the manager's default)
GB = 1 << 30

Feed = Callable[[int], list[tuple[dict[str, str], float]]]  # t ms -> (labels, value)


async def firing_after(store: TSDB, minutes: float, feed: Feed,
                       alert: str) -> tuple[list[dict[str, str]], float]:
    """Feed the store every STEP for ``minutes`` while the packaged rules run on it;
    (the labels of ``alert``'s firing alerts at the end, the minute it first fired)."""
    clock = Clock(T0)
    manager = RuleManager(store, Engine(store), clock=clock, interval_s=STEP / S)
    await manager.set_group("default_rules.yml", DEFAULT_RULES.read_text())
    [rule] = [r for r in manager.rules() if isinstance(r, AlertingRule) and r.name == alert]
    first: float | None = None
    for i in range(int(minutes * MIN / STEP) + 1):
        t = T0 + i * STEP
        store.append([(labels, t, value) for labels, value in feed(t)])
        clock.ms = t + 1  # the groups evaluate at their latest slot (offset by a hash)
        await manager.evaluate_once()
        if first is None and any(a.state is AlertState.FIRING for a in rule.alerts()):
            first = minutes_since_start(t)
    firing = [dict(a.labels) for a in rule.alerts() if a.state is AlertState.FIRING]
    assert first is not None, f"{alert} never fired"
    return firing, first


def minutes_since_start(t: int) -> float:
    return (t - T0) / MIN


async def test_a_disk_filling_within_four_hours_fires_and_a_steady_one_does_not(
        store: TSDB) -> None:
    def feed(t: int) -> list[tuple[dict[str, str], float]]:
        disk = {"__name__": "node_filesystem_avail_bytes", "instance": "host-1:9100",
                "fstype": "ext4", "device": "/dev/sda1"}
        return [({**disk, "mountpoint": "/"}, 40 * GB - minutes_since_start(t) * 0.2 * GB),
                ({**disk, "mountpoint": "/data"}, 40 * GB),
                ({**disk, "mountpoint": "/run", "fstype": "tmpfs"},
                 GB - minutes_since_start(t) * 0.01 * GB)]  # tmpfs: not a disk

    # 12 GB an hour off 40 GB: gone within 4 h from the start
    firing, first = await firing_after(store, 40, feed, "DiskWillFillIn4Hours")
    assert [(a["mountpoint"], a["severity"]) for a in firing] == [("/", "page")]
    assert 30 <= first <= 31  # once its 30 minutes have passed


async def test_a_consumer_lag_growing_past_ten_thousand_fires_and_a_steady_one_does_not(
        store: TSDB) -> None:
    def feed(t: int) -> list[tuple[dict[str, str], float]]:
        lag = {"__name__": "geoplex_broker_consumer_lag", "job": "broker",
               "topic": "rides", "partition": "0"}
        return [({**lag, "group": "billing"}, 12_000 + minutes_since_start(t) * 100),
                ({**lag, "group": "steady"}, 50_000.0),               # big, not growing
                ({**lag, "group": "small"}, 10 + minutes_since_start(t))]  # growing, small

    firing, first = await firing_after(store, 20, feed, "BrokerConsumerLagGrowing")
    assert [a["group"] for a in firing] == ["billing"]
    assert 15 <= first <= 16


async def test_telemetry_refusing_writes_fires_by_path_and_reason(store: TSDB) -> None:
    def feed(t: int) -> list[tuple[dict[str, str], float]]:
        refused = {"__name__": "geoplex_telemetry_samples_rejected_total", "job": "telemetry",
                   "instance": "host:1"}
        n = (t - T0) // STEP
        return [({**refused, "path": "remote_write", "reason": "SAMPLE_RATE_LIMIT"},
                 float(n * 500)),
                ({**refused, "path": "write", "reason": "INVALID_LABELS"}, 3.0)]  # long ago

    firing, first = await firing_after(store, 12, feed, "TelemetryIngestRefusingSamples")
    assert [(a["path"], a["reason"], a["severity"]) for a in firing] == [
        ("remote_write", "SAMPLE_RATE_LIMIT", "ticket")]
    assert 10 <= first <= 11


async def test_notifications_failing_fires_at_once_per_notifier(store: TSDB) -> None:
    def feed(t: int) -> list[tuple[dict[str, str], float]]:
        failed = {"__name__": "geoplex_notifier_notifications_failed_total",
                  "job": "notifier", "integration": "email"}
        late = t >= T0 + 3 * MIN
        return [({**failed, "instance": "notifier-1"}, 2.0 if late else 0.0),
                ({**failed, "instance": "notifier-2"}, 0.0)]

    firing, first = await firing_after(store, 5, feed, "NotificationsFailing")
    assert [(a["instance"], a["severity"]) for a in firing] == [("notifier-1", "page")]
    assert 3 <= first <= 3.5  # at once (no for), at the next slot


async def test_slow_calls_fire_the_latency_budget_and_streams_and_long_polls_do_not(
        store: TSDB) -> None:
    def histogram(job: str, method: str, slow_share: float, t: int,
                  waits: str = "") -> list[tuple[dict[str, str], float]]:
        """100 calls a second, ``slow_share`` of them in the 2.5 s bucket, the rest 1 ms."""
        calls = (t - T0) / S * 100
        labels = {"__name__": "rpc_server_call_duration_seconds_bucket", "job": job,
                  "instance": f"{job}:1", "rpc_method": method, "rpc_grpc_status_code": "0"}
        if waits:
            labels["geoplex_rpc_waits"] = waits
        return [({**labels, "le": le}, calls * (1 - slow_share) if le in ("0.001", "0.5")
                 else calls) for le in ("0.001", "0.5", "2.5", "+Inf")]

    def feed(t: int) -> list[tuple[dict[str, str], float]]:
        return [*histogram("maps", "Geocode", 0.05, t),          # 5 % take 2.5 s: p99 over
                *histogram("proximity", "Search", 0.0, t),       # all fast
                # the broker's waits: streams open for seconds, fetches waiting for records
                *histogram("broker", "ProduceStream", 1.0, t, "stream"),
                *histogram("broker", "Fetch", 1.0, t, "poll"),
                *histogram("broker", "Produce", 0.0, t)]

    firing, first = await firing_after(store, 20, feed, "RpcLatencyOverBudget")
    assert [a["job"] for a in firing] == ["maps"]
    assert 10 <= first <= 11  # once its 10 minutes have passed


async def test_server_errors_over_five_percent_fire_and_client_errors_do_not(
        store: TSDB) -> None:
    def calls(job: str, per_second: dict[str, float], t: int, *,
              status: str = "rpc_grpc_status_code",
              name: str = "rpc_server_call_duration_seconds_count"
              ) -> list[tuple[dict[str, str], float]]:
        """A counter of calls per status code, each at its ``per_second``."""
        labels = {"__name__": name, "job": job, "instance": f"{job}:1", "rpc_method": "Get"}
        return [({**labels, status: code}, (t - T0) / S * rate)
                for code, rate in per_second.items()]

    def feed(t: int) -> list[tuple[dict[str, str], float]]:
        return [*calls("maps", {"0": 100, "14": 10}, t),             # 9 % UNAVAILABLE
                # the newer conventions name the code, the older count in milliseconds
                *calls("routing", {"OK": 100, "DEADLINE_EXCEEDED": 10}, t,
                       status="rpc_response_status_code"),
                *calls("legacy", {"0": 100, "2": 10}, t,             # UNKNOWN
                       name="rpc_server_duration_milliseconds_count"),
                # the callers' mistakes, however many: INVALID_ARGUMENT, NOT_FOUND,
                # PERMISSION_DENIED, RESOURCE_EXHAUSTED, UNAUTHENTICATED
                *calls("proximity", {"0": 100, "3": 50, "5": 50, "7": 10, "8": 10, "16": 10},
                       t),
                *calls("presence", {"OK": 100, "INVALID_ARGUMENT": 100}, t,
                       status="rpc_response_status_code"),
                *calls("broker", {"0": 100, "13": 1}, t)]          # 1 % INTERNAL: under

    firing, first = await firing_after(store, 7, feed, "RpcErrorRatioHigh")
    assert sorted((a["job"], a["severity"]) for a in firing) == [
        ("legacy", "page"), ("maps", "page"), ("routing", "page")]
    assert 5 <= first <= 6  # once its 5 minutes have passed


async def test_a_scrape_losing_repeated_series_for_ten_minutes_fires_and_a_blip_does_not(
        store: TSDB) -> None:
    def feed(t: int) -> list[tuple[dict[str, str], float]]:
        blip = t < T0 + 3 * MIN

        def scrape(instance: str, scraped: float, kept: float
                   ) -> list[tuple[dict[str, str], float]]:
            labels = {"job": "node", "instance": instance}
            return [({**labels, "__name__": "scrape_samples_scraped"}, scraped),
                    ({**labels, "__name__": "scrape_samples_post_metric_relabeling"}, kept)]

        return [*scrape("host-1:9100", 120, 117),                  # 3 repeated, always
                *scrape("host-2:9100", 80, 80),
                *scrape("host-3:9100", 80, 75 if blip else 80)]    # only for 3 minutes

    firing, first = await firing_after(store, 12, feed, "TelemetryIngestDroppingSamples")
    assert [(a["instance"], a["severity"]) for a in firing] == [("host-1:9100", "ticket")]
    assert 10 <= first <= 10.5


async def test_a_scrape_target_down_for_a_minute_fires_and_a_mesh_slot_does_not(
        store: TSDB) -> None:
    def feed(t: int) -> list[tuple[dict[str, str], float]]:
        down = 0.0 if t >= T0 + 2 * MIN else 1.0
        up = {"__name__": "up", "job": "node"}
        return [({**up, "instance": "host-1:9100"}, down),
                ({**up, "instance": "host-2:9100"}, 1.0),
                # a process of the mesh: InstanceDown's, by its slot
                ({"__name__": "up", "job": "proximity", "slot": "proximity-1"}, 0.0)]

    firing, first = await firing_after(store, 5, feed, "ServiceDown")
    assert [(a["job"], a.get("instance"), a["severity"]) for a in firing] == [
        ("node", "host-1:9100", "page")]
    assert 3 <= first <= 3.5  # down from minute 2, for its minute


async def test_a_pusher_silent_for_five_minutes_fires_and_a_mesh_service_does_not(
        store: TSDB) -> None:
    def feed(t: int) -> list[tuple[dict[str, str], float]]:
        uptime = {"__name__": "process_uptime_seconds"}
        alive = (t - T0) / S
        out = [({**uptime, "job": "worker", "instance": "worker-2"}, alive),
               ({"__name__": "geoplex_mesh_processes", "job": "proximity"}, 1.0)]
        if t <= T0 + 2 * MIN:  # both report last at minute 2
            out += [({**uptime, "job": "worker", "instance": "worker-1"}, alive),
                    ({**uptime, "job": "proximity", "instance": "proximity-1"}, alive)]
        return out

    firing, first = await firing_after(store, 10, feed, "ServiceHeartbeatMissing")
    assert [(a["job"], a["instance"], a["severity"]) for a in firing] == [
        ("worker", "worker-1", "page")]
    assert 8 <= first <= 8.5  # silent for 5 minutes from minute 2, then its minute
