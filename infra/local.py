"""Start the backends Geoplex stands on, for real, on loopback.

``redis-server`` and ``etcd`` come from Debian packages (the Makefile installs
them); the MongoDB wire-compatible server is SecantusDB (``secantusd-py``,
WiredTiger storage, 2dsphere support), a PyPI dependency, because no
``mongod`` can be installed here. Each backend listens on a free loopback port
and keeps its data under one state directory; start-up waits until each one
answers its own protocol (PING, /health, hello). One ``LocalInfra`` at a time
owns a state directory (:class:`StateDirLock`, taken before any backend
starts): a second one, e.g. ``geoplex infra up`` beside a running
``geoplex up``, stops with a message naming the owner instead of starting a
second redis-server on the live AOF files.

A backend given in ``configured`` (what ``GEOPLEX_REDIS_URL``, ``GEOPLEX_MONGO_URI``
and ``GEOPLEX_ETCD_ENDPOINTS`` say, read by ``geoplex.tools.backends``) is not
started: the configured server is checked for reachability and used (the
production path: a MongoDB replica set or sharded cluster, Redis Cluster, an etcd
cluster). Each started backend is a :class:`~geoplex.infra.process.Process`.
This module imports nothing from ``geoplex.servers``.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

from .process import Process, ProcessError

T = TypeVar("T")

BACKENDS = ("redis", "mongo", "etcd")
LOCK_FILE = "geoplex.lock"
READY_TIMEOUT = 30.0


class InfraError(RuntimeError):
    """A backend cannot be started or reached; the message says how to fix it."""


class StateDirLock:
    """One owner at a time for a state directory: an exclusive ``flock`` on its
    ``geoplex.lock``, which holds the owner's pid and command (for the message the next
    one gets). The kernel drops the lock when the owner's file is closed, so a crashed
    owner frees the directory by dying; a lock file left behind blocks nothing. The file
    is never removed (a process could be locking the old one while another makes a new
    one): it is emptied at release."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = self._owner(fd)
            os.close(fd)
            raise InfraError(f"{self.state_dir} is in use by {owner}: stop it, or give this "
                             "one another state directory (GEOPLEX_STATE_DIR or "
                             "--state-dir)") from None
        except BaseException:
            os.close(fd)
            raise
        command = shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300]
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps({"pid": os.getpid(), "command": command}) + "\n").encode(), 0)
        self._fd = fd

    @staticmethod
    def _owner(fd: int) -> str:
        try:
            owner = json.loads(os.pread(fd, 4096, 0))
            return f"pid {int(owner['pid'])} ({owner['command']})"
        except (OSError, ValueError, KeyError, TypeError):  # being written as we read
            return "another process"

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # drops the lock


@dataclass(frozen=True, slots=True)
class BackendUrls:
    redis_url: str | None = None
    mongo_uri: str | None = None
    etcd_endpoints: tuple[str, ...] | None = None

    def env(self) -> dict[str, str]:
        """The ``GEOPLEX_*`` variables that point services at these backends."""
        out = {}
        if self.redis_url:
            out["GEOPLEX_REDIS_URL"] = self.redis_url
        if self.mongo_uri:
            out["GEOPLEX_MONGO_URI"] = self.mongo_uri
        if self.etcd_endpoints:
            out["GEOPLEX_ETCD_ENDPOINTS"] = ",".join(self.etcd_endpoints)
        return out


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def find_binary(name: str, hint: str) -> str:
    found = shutil.which(name)
    if found is None:
        candidate = Path(sys.executable).parent / name
        if candidate.exists():
            return str(candidate)
        raise InfraError(f"{name} not found on PATH: {hint}")
    return found


# -- readiness probes: each speaks the backend's own protocol ---------------

def redis_ready(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - not ready yet
        return False


def mongo_ready(uri: str) -> bool:
    import pymongo

    try:
        client: pymongo.MongoClient = pymongo.MongoClient(uri, serverSelectionTimeoutMS=1000,
                                                          connectTimeoutMS=1000)
        try:
            return bool(client.admin.command("ping").get("ok"))
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - not ready yet
        return False


def etcd_ready(endpoints: Iterable[str]) -> bool:
    for endpoint in endpoints:
        try:
            with urllib.request.urlopen(f"http://{endpoint}/health", timeout=1) as resp:
                if json.load(resp).get("health") in ("true", True):
                    return True
        except Exception:  # noqa: BLE001 - try the next endpoint
            continue
    return False


@dataclass
class LocalInfra:
    """The embedded backends, or the configured ones, for a mesh or a test run.

    >>> infra = LocalInfra(Path(".geoplex"), configured=configured_backends())
    >>> urls = infra.start()      # starts what is not configured, waits for readiness
    >>> infra.stop()              # stops only what it started

    (``configured_backends`` is in ``geoplex.tools.backends``.)
    """

    state_dir: Path
    backends: tuple[str, ...] = BACKENDS
    configured: BackendUrls = field(default_factory=BackendUrls)
    host: str = "127.0.0.1"
    progress: Callable[[str], None] = lambda _msg: None
    redis_cluster: int = 0  # 0: one redis-server; 3+: a Redis Cluster of that many primaries
    procs: dict[str, Process] = field(default_factory=dict)
    urls: BackendUrls = field(default_factory=BackendUrls)
    lock: StateDirLock = field(init=False)

    def __post_init__(self) -> None:
        self.lock = StateDirLock(self.state_dir)

    def start(self) -> BackendUrls:
        """Lock the state directory (:class:`StateDirLock`: an InfraError naming the
        owner if another process has it), then start or check each backend."""
        unknown = set(self.backends) - set(BACKENDS)
        if unknown:
            raise InfraError(f"unknown backend {sorted(unknown)}; allowed: {', '.join(BACKENDS)}")
        self.lock.acquire()
        try:
            redis_url = self.configured.redis_url
            mongo_uri = self.configured.mongo_uri
            etcd = self.configured.etcd_endpoints
            if "redis" in self.backends:
                redis_url = self._redis() if redis_url is None else self._check(
                    "GEOPLEX_REDIS_URL", redis_url, redis_ready)
            if "mongo" in self.backends:
                mongo_uri = self._mongo() if mongo_uri is None else self._check(
                    "GEOPLEX_MONGO_URI", mongo_uri, mongo_ready)
            if "etcd" in self.backends:
                etcd = self._etcd() if etcd is None else self._check(
                    "GEOPLEX_ETCD_ENDPOINTS", etcd, etcd_ready)
            for proc in self.procs.values():
                self._wait_ready(proc)
                self.progress(f"{proc.name}: ready")
            if "redis" in self.backends and self.configured.redis_url is None \
                    and self.redis_cluster:
                self._form_redis_cluster()
        except BaseException:
            self.stop()
            raise
        self.urls = BackendUrls(redis_url, mongo_uri, etcd)
        return self.urls

    def _check(self, var: str, value: T, probe: Callable[[T], bool]) -> T:
        if not probe(value):
            raise InfraError(f"{var}: cannot reach the configured server; start it, fix the "
                             f"value, or unset {var} to use the embedded one")
        self.progress(f"{var}: using the configured server")
        return value

    def _redis(self) -> str:
        binary = find_binary("redis-server", "install it with `apt-get install redis-server` "
                                             "(make setup does), or set GEOPLEX_REDIS_URL")
        if self.redis_cluster:
            return self._redis_cluster_nodes(binary)
        port = free_port(self.host)
        data = self.state_dir / "redis"
        data.mkdir(parents=True, exist_ok=True)
        url = f"redis://{self.host}:{port}/0"
        self._start("redis", Process(
            "redis-server", self._redis_argv(binary, port, data),
            self.state_dir / "logs" / "redis.log", probe=partial(redis_ready, url)),
            f"{self.host}:{port}")
        return url

    def _redis_argv(self, binary: str, port: int, data: Path) -> list[str]:
        return [binary, "--bind", self.host, "--port", str(port), "--dir", str(data),
                "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
                "--protected-mode", "yes", "--daemonize", "no"]

    def _redis_cluster_nodes(self, binary: str) -> str:
        """Start the primaries of a Redis Cluster (formed once all are up); the URL of
        the first is the seed a cluster client discovers the others from."""
        if self.redis_cluster < 3:
            raise InfraError(f"a Redis Cluster needs at least 3 primaries, not "
                             f"{self.redis_cluster}")
        self._cluster_ports: list[int] = []
        for i in range(self.redis_cluster):
            port, bus = free_port(self.host), free_port(self.host)
            data = self.state_dir / f"redis-{i}"
            # a local cluster starts empty: its nodes get new ports each time, and a kept
            # nodes.conf would name the old ones (the cluster would never come up)
            shutil.rmtree(data, ignore_errors=True)
            data.mkdir(parents=True, exist_ok=True)
            url = f"redis://{self.host}:{port}/0"
            self._start(f"redis-{i}", Process(
                f"redis-server (cluster node {i})",
                [*self._redis_argv(binary, port, data), "--cluster-enabled", "yes",
                 "--cluster-port", str(bus), "--cluster-config-file", "nodes.conf",
                 "--cluster-node-timeout", "2000"],
                self.state_dir / "logs" / f"redis-{i}.log", probe=partial(redis_ready, url)),
                f"{self.host}:{port}")
            self._cluster_ports.append(port)
        return f"redis://{self.host}:{self._cluster_ports[0]}/0"

    def _form_redis_cluster(self) -> None:
        import redis

        nodes = [f"{self.host}:{p}" for p in self._cluster_ports]
        try:
            cli = find_binary("redis-cli", "it comes with redis-server (apt-get install "
                                           "redis-server)")
            done = subprocess.run([cli, "--cluster", "create", *nodes, "--cluster-replicas",
                                   "0", "--cluster-yes"], capture_output=True, text=True,
                                  timeout=60)
            if done.returncode != 0:
                raise InfraError(f"redis-cli --cluster create failed: "
                                 f"{(done.stdout + done.stderr).strip().splitlines()[-1:]}")
            deadline = time.monotonic() + READY_TIMEOUT
            while True:
                states = []
                for port in self._cluster_ports:
                    node = redis.Redis(host=self.host, port=port, socket_timeout=2)
                    try:
                        states.append(node.cluster("info").get("cluster_state"))
                    finally:
                        node.close()
                if all(state == "ok" for state in states):
                    break
                if time.monotonic() > deadline:
                    raise InfraError(f"Redis Cluster not ok within {READY_TIMEOUT:.0f}s: "
                                     f"{states}")
                time.sleep(0.1)
            self.progress(f"Redis Cluster: {len(nodes)} primaries, all 16384 slots served")
        except subprocess.TimeoutExpired:
            raise InfraError("redis-cli --cluster create did not finish within 60s") from None

    def _mongo(self) -> str:
        binary = find_binary("secantusd-py", "install the project (pip install -e .), "
                                             "which brings SecantusDB, or set GEOPLEX_MONGO_URI")
        port = free_port(self.host)
        data = self.state_dir / "mongo"
        data.mkdir(parents=True, exist_ok=True)
        uri = f"mongodb://{self.host}:{port}/?directConnection=true"
        self._start("mongo", Process(
            "secantusdb",
            [binary, "--host", self.host, "--port", str(port), "--storage-path", str(data),
             "--log-level", "WARNING", "--noop-heartbeat-seconds", "10"],
            self.state_dir / "logs" / "mongo.log", probe=partial(mongo_ready, uri)),
            f"{self.host}:{port}", "secantusdb (MongoDB wire protocol)")
        return uri

    def _etcd(self) -> tuple[str, ...]:
        binary = find_binary("etcd", "install it with `apt-get install etcd-server` "
                                     "(make setup does), or set GEOPLEX_ETCD_ENDPOINTS")
        client, peer = free_port(self.host), free_port(self.host)
        data = self.state_dir / "etcd"
        endpoint = f"{self.host}:{client}"
        self._start("etcd", Process(
            "etcd",
            [binary, "--name", "geoplex", "--data-dir", str(data),
             "--listen-client-urls", f"http://{endpoint}",
             "--advertise-client-urls", f"http://{endpoint}",
             "--listen-peer-urls", f"http://{self.host}:{peer}",
             "--initial-advertise-peer-urls", f"http://{self.host}:{peer}",
             "--initial-cluster", f"geoplex=http://{self.host}:{peer}",
             "--log-level", "warn", "--logger", "zap"],
            self.state_dir / "logs" / "etcd.log", probe=partial(etcd_ready, [endpoint])),
            endpoint)
        return (endpoint,)

    def _start(self, key: str, proc: Process, where: str, what: str = "") -> None:
        """Start a backend without waiting for it (they come up side by side)."""
        proc.ready_timeout = READY_TIMEOUT
        self.procs[key] = proc
        self.progress(f"{what or proc.name}: starting on {where}")
        proc.start()

    @staticmethod
    def _wait_ready(proc: Process) -> None:
        try:
            proc.wait_ready()
        except ProcessError as exc:
            raise InfraError(str(exc)) from None

    def stop(self) -> None:
        """Stop what this object started, in reverse order of start; unlock the state
        directory."""
        try:
            for name in reversed(list(self.procs)):
                self.procs[name].stop()
                self.progress(f"{self.procs[name].name}: stopped")
            self.procs.clear()
        finally:
            self.lock.release()

    def restart(self, name: str, *, kill: bool = False) -> None:
        """Stop (or SIGKILL) one started backend and start it again on the same port."""
        proc = self.procs[name]
        if kill:
            proc.kill()
        else:
            proc.stop()
        proc.start()
        self._wait_ready(proc)

    def __enter__(self) -> BackendUrls:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
