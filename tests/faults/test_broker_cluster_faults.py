"""A three-broker cluster under every fault in turn, with producers writing all along
(Jepsen-style): no acknowledged record is lost, none is invented, each producer's order
holds.

Three brokers on their own etcd (``OWN_BACKENDS``), each behind a proxy so that a broker
can be cut off (``nemesis.py`` describes how); a topic with three partitions, three
replicas each and ``min_insync_replicas`` 2; two producers per partition with acks=ALL and
idempotent sequences, routed to the leaders by GetMetadata (``nemesis.Router``). Each round
is one fault, healed, then until every partition has a live leader and a full ISR again:
kill -9 a leader, a follower, all three; SIGSTOP a leader past its lease; cut a leader off
from the brokers and etcd, a follower from the brokers; damage a stopped follower's
segment tails; restart etcd. At the end every partition is read back from its leader and
checked against the history; the counts per fault kind are printed. The long version,
with a hundred leader kills, is ``python -m bench.broker_chaos``. The faults' random
choices come from a seed printed with the table (``GEOPLEX_CHAOS_SEED`` sets it; timing
still varies from run to run).
"""

from __future__ import annotations

import os
import random
import time
import uuid
from pathlib import Path

import pytest

from geoplex.broker.v1 import broker_pb2 as pb
from geoplex.infra.local import LocalInfra

import nemesis  # tests/nemesis.py
import polling  # tests/polling.py
from broker_cluster import BrokerCluster  # tests/broker_cluster.py

pytestmark = pytest.mark.timeout(180)
OWN_BACKENDS = ("etcd",)
ROUNDS = 2 * len(nemesis.FAULT_KINDS)  # every fault kind twice (75 s here, on 2 cores)
PARTITIONS = 3


async def test_no_acknowledged_record_is_lost_under_every_fault_of_a_three_broker_cluster(
        own_infra: LocalInfra, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert own_infra.urls.etcd_endpoints
    seed = int(os.environ.get("GEOPLEX_CHAOS_SEED") or random.randrange(1 << 32))
    began = time.monotonic()
    lines: list[str] = []
    try:
        async with BrokerCluster(own_infra.urls.etcd_endpoints, tmp_path, proxies=True,
                                 etcd=own_infra.procs["etcd"]) as cluster:
            await cluster.wait_healthy()
            topic = await cluster.create_topic(f"jepsen-{uuid.uuid4().hex[:8]}", PARTITIONS,
                                               replication_factor=3, min_insync_replicas=2)
            await cluster.wait_healthy([topic])
            history = nemesis.History()
            router = nemesis.Router(cluster, topic)
            workload = nemesis.Workload(router, history, PARTITIONS,
                                        nemesis.WorkloadConfig(acks=pb.ACKS_ALL), seed=seed)
            workload.start()
            try:
                await polling.eventually(lambda: history.acked >= 200, 30,
                                         what="200 records acknowledged before the faults")
                context = nemesis.FaultContext(cluster, topic, PARTITIONS, history,
                                               random.Random(seed))
                kinds = nemesis.schedule(ROUNDS)
                await nemesis.run_faults(context, kinds, calm_s=1.0, progress=lambda n, r:
                                         lines.append(f"  {n}. {r.line()}"))
                history.phase = "after"
            finally:
                await workload.stop()
            await cluster.wait_healthy([topic])
            consumed = await nemesis.consume_all(router, PARTITIONS)
        result = history.check(consumed)
        lines += [result.table(), "errors seen by the producers: " + ", ".join(
            f"{reason} {count}" for reason, count in sorted(workload.errors.items()))]
    finally:
        summary = "\n".join([f"broker cluster faults (seed {seed}, "
                             f"{time.monotonic() - began:.0f} s):", *lines])
        with capsys.disabled():
            print("\n" + summary)
    assert set(kinds) == set(nemesis.FAULT_KINDS)
    assert result.total.acked > 0
    assert result.total.lost == 0, summary
    assert result.unexpected == 0, summary
    assert result.total.order == 0, summary
    assert result.total.moved == 0, summary
