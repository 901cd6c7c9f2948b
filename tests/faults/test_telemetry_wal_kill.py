"""The telemetry store killed with SIGKILL mid-write: reopened, every sample whose append
had returned is there (the WAL replayed into the head, the cut blocks intact)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from geoplex.servers.telemetry.tsdb import TSDB, FsyncPolicy, Matcher, MatchOp, TSDBOptions

WRITER = textwrap.dedent("""
    import sys
    from geoplex.servers.telemetry.tsdb import TSDB, TSDBOptions, FsyncPolicy
    policy = FsyncPolicy.always() if sys.argv[2] == "always" else FsyncPolicy.interval(5)
    # small block ranges so that blocks are cut and the WAL checkpointed while writing
    db = TSDB.open(sys.argv[1], TSDBOptions(block_range_ms=20_000, ooo_window_ms=5_000,
                                            downsample=False, fsync=policy,
                                            wal_segment_bytes=8192))
    print("ready", flush=True)
    batch = 0
    while True:
        t = batch * 1000
        db.append([({"__name__": "m", "s": str(s)}, t, float(batch * 10 + s)) for s in range(5)])
        print("acked", batch, flush=True)
        batch += 1
""")
ACKED_BEFORE_KILL = 150


@pytest.mark.timeout(60)
@pytest.mark.parametrize("policy", ["always", "interval"])
def test_every_acked_sample_survives_kill_9(tmp_path: Path, policy: str) -> None:
    store = tmp_path / "store"
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(store), policy],
                             stdout=subprocess.PIPE, text=True)
    acked = -1
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        while acked < ACKED_BEFORE_KILL:
            line = child.stdout.readline()
            assert line, "the writer exited early"
            acked = int(line.split()[1])
        child.send_signal(signal.SIGKILL)
        for line in child.stdout:  # what it printed before it died
            if line.endswith("\n"):
                acked = int(line.split()[1])
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    with TSDB.open(store, TSDBOptions(block_range_ms=20_000, ooo_window_ms=5_000,
                                      downsample=False, fsync=FsyncPolicy.always())) as db:
        stats = db.stats()
        assert stats.blocks, "blocks were cut while writing"
        found = {(s.labels["s"], int(t)): v for s in db.select(
            [Matcher("__name__", MatchOp.EQ, "m")], 0, 10 ** 9)
            for t, v in zip(s.timestamps, s.values.tolist())}
        missing = [(batch, s) for batch in range(acked + 1) for s in range(5)
                   if found.get((str(s), batch * 1000)) != float(batch * 10 + s)]
        assert missing == []
        # the store takes writes after the crash, after the last batch it may have written
        t = (max(t for _, t in found) + 1000)
        assert db.append([({"__name__": "m", "s": "0"}, t, 1.0)]).appended == 1
