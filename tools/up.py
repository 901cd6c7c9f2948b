"""``geoplex up``: backends, demo data, every service supervised, until Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

from geoplex.infra.local import InfraError, LocalInfra, free_port
from geoplex.servers._runtime.config import ConfigError, Env
from geoplex.tools.backends import configured_backends
from geoplex.tools.mail_sink import MailSink
from geoplex.tools.output import print_error
from geoplex.tools.supervisor import ProcessSpec, Supervisor, SupervisorError, python_module
from geoplex.servers._runtime.declaration import ServiceDeclaration
from geoplex.servers.catalog import services

# Ctrl-C stops the services in rounds (the supervisor's stop_order): first those that write
# to others, then telemetry and the notifiers (the services' last metrics and alerts go
# there), the broker last, so a service's final flush (presence's history, the metrics
# through the topic) still has a broker to go to rather than waiting out its grace
STOP_ORDER = {"telemetry": 1, "notifier": 1, "broker": 2}


def _port_for(entry: ServiceDeclaration) -> int:
    """The configured or default port; a taken default falls back to a free one."""
    var = f"{entry.env_prefix}PORT"
    env = Env()
    if env.raw(var) is not None:
        return env.int(var, entry.default_port, lo=1, hi=65535)
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", entry.default_port))
            return entry.default_port
        except OSError:
            return free_port()


def _http_port_for(entry: ServiceDeclaration) -> int | None:
    """The configured HTTP port (GEOPLEX_<NAME>_HTTP_PORT; None when "off"), else the
    default if free, else a free one."""
    assert entry.http is not None
    env = Env()
    var = f"{entry.env_prefix}HTTP_PORT"
    raw = env.raw(var)
    if raw is not None:
        return None if raw.strip().lower() == "off" else env.int(var, entry.http[1], lo=1,
                                                                  hi=65535)
    return _node_port(entry.http[1])


def _node_port(port: int) -> int:
    """A cluster node's default port, or a free one if it is taken."""
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
            return port
        except OSError:
            return free_port()


async def watch_backends(infra: LocalInfra, every_s: float = 1.0) -> None:
    """Restart a backend that exited (on its port, with its data: Redis's append-only file,
    etcd's and MongoDB's data directories), as the supervisor restarts the services."""
    while True:
        await asyncio.sleep(every_s)
        for name, proc in list(infra.procs.items()):
            code = proc.returncode
            if proc.proc is None or code is None:
                continue
            print(f"[infra] {proc.name} exited with code {code}; restarting it", flush=True)
            try:
                await asyncio.to_thread(infra.restart, name)
            except InfraError as exc:
                print(f"[infra] {proc.name} did not come back: {exc}", flush=True)
            else:
                print(f"[infra] {proc.name}: restarted", flush=True)


async def up(state_dir: Path, demo_data: bool = True, only: list[str] | None = None) -> int:
    state_dir = state_dir.resolve()
    declared = services()
    entries = [e for e in declared if not only or e.name in only]
    if only and len(entries) != len(only):
        known = ", ".join(e.name for e in declared)
        return print_error(f"unknown service in {only}; implemented: {known}")
    try:
        configured = configured_backends()
    except InfraError as exc:
        return print_error(exc)
    infra = LocalInfra(state_dir, configured=configured,
                       progress=lambda m: print(f"[infra] {m}", flush=True))
    supervisor: Supervisor | None = None
    sink: MailSink | None = None
    watcher: asyncio.Task[None] | None = None
    try:
        urls = infra.start()
        # services that keep files (the broker's partition logs) keep them under it too
        env = {**urls.env(), "GEOPLEX_STATE_DIR": str(state_dir)}
        needed = sorted({name for e in entries for name in e.datasets})
        if needed:  # the data the servers read at start (the routing regions)
            from geoplex.infra import data

            await asyncio.to_thread(data.fetch, needed,
                                    progress=lambda m: print(f"[data] {m}", flush=True))
        if demo_data:
            from .demo import load_demo_data

            await load_demo_data(env, progress=lambda m: print(f"[data] {m}", flush=True))
        ports: dict[str, list[int]] = {}
        http_ports: dict[str, int] = {}  # the HTTP endpoints: the default, else a free one
        for entry in entries:
            port = _port_for(entry)
            ports[entry.name] = [port] + [_node_port(port + 100 * i)
                                          for i in range(1, entry.nodes)]
            http_port = _http_port_for(entry) if entry.http else None
            if http_port is not None:
                http_ports[entry.name] = http_port
        # every service learns where the others listen, under the variables the SDK and
        # the CLI read (GEOPLEX_BROKER_TARGET=host:port,...): maps produces to the broker
        env.update({f"{e.env_prefix}TARGET": ",".join(f"127.0.0.1:{p}" for p in ports[e.name])
                    for e in entries})
        names = {e.name for e in entries}
        specs = []
        if "telemetry" in names:
            telemetry = f"127.0.0.1:{ports['telemetry'][0]}"
            # every service reports its own metrics to telemetry over OTLP, and the host
            # agent pushes the machine's; the rule evaluator posts alerts to the notifiers
            env.update({"GEOPLEX_METRICS": "otlp", "GEOPLEX_METRICS_ENDPOINT": telemetry})
            specs.append(ProcessSpec("agent", [*python_module("geoplex.tools.agent"),
                                               "--target", telemetry], env))
            if "notifier" in names:
                env["GEOPLEX_TELEMETRY_NOTIFIERS"] = env["GEOPLEX_NOTIFIER_TARGET"]
        if "notifier" in names and not env.get("GEOPLEX_NOTIFIER_CONFIG"):
            # alert emails go to a local sink that prints each one as it arrives
            sink = MailSink(state_dir / "mail",
                            announce=lambda line: print(line, flush=True)).start()
            env.update({"GEOPLEX_NOTIFIER_SMTP_URL": sink.url,
                        "GEOPLEX_NOTIFIER_EMAIL_TO": "oncall@localhost"})
        for entry in entries:
            port = ports[entry.name][0]
            prefix = entry.env_prefix
            order = STOP_ORDER.get(entry.name, 0)
            if entry.nodes > 1:
                for i, node_port in enumerate(ports[entry.name], start=1):
                    specs.append(ProcessSpec(
                        f"{entry.name}-{i}", python_module(entry.module),
                        {**env, prefix + "PORT": str(node_port), prefix + "ID": str(i),
                         prefix + "DATA_DIR": str(state_dir / f"{entry.name}-{i}")}, order))
                continue
            http = ({prefix + "HTTP_PORT": str(http_ports[entry.name])}
                    if entry.name in http_ports else {})
            # with a broker, the services' metrics go through it (telemetry consumes the
            # topic: servers/_runtime/metrics_broker.py); the broker's and telemetry's
            # own go straight to telemetry, so they arrive when the broker is failing
            through = ({"GEOPLEX_METRICS": "broker"}
                       if {"telemetry", "broker"} <= names
                       and entry.name not in ("telemetry", "broker") else {})
            for n in range(entry.processes):
                specs.append(ProcessSpec(
                    f"{entry.name}-{n + 1}", python_module(entry.module),
                    {**env, **http, **through, prefix + "PORT": str(port),
                     prefix + "REUSE_PORT": "true" if entry.processes > 1 else "false"},
                    order))
        # where `geoplex mesh status` (and any other command) finds this mesh's etcd
        (state_dir / "mesh.json").write_text(json.dumps(
            {"etcd": env.get("GEOPLEX_ETCD_ENDPOINTS", ""),
             "targets": {e.name: env[f"{e.env_prefix}TARGET"] for e in entries},
             "http": {name: f"127.0.0.1:{port}" for name, port in http_ports.items()},
             "backends": urls.env()},
            indent=2) + "\n")
        supervisor = Supervisor(specs, log_dir=state_dir / "logs")
        await supervisor.start()
        print("\nGeoplex is up. Endpoints (plaintext, reflection on):", flush=True)
        for entry in entries:
            target = f"127.0.0.1:{ports[entry.name][0]}"
            method, body = entry.example.method, entry.example.body
            if entry.nodes > 1:
                nodes = ", ".join(f"127.0.0.1:{p}" for p in ports[entry.name])
                print(f"  {entry.name:<10} {nodes}  ({entry.nodes} nodes)")
            else:
                print(f"  {entry.name:<10} {target}  ({entry.processes} processes)")
            print(f"    grpcurl -plaintext {target} list")
            if entry.http and entry.name in http_ports:
                print(f"    {entry.http[0]}: http://127.0.0.1:{http_ports[entry.name]}/")
            auth = ' -H "authorization: Bearer $(geoplex auth dev-token alice)"' \
                if entry.needs_token else ""
            print(f"    grpcurl -plaintext{auth} -d '{body}' {target} {entry.grpc_service_names[0]}/{method}")
        print("Backends:", ", ".join(f"{k}={v}" for k, v in urls.env().items()))
        if "telemetry" in http_ports:
            print(f"Dashboard: http://127.0.0.1:{http_ports['telemetry']}/ (the mesh at a "
                  "glance, a query box, firing alerts and silences)")
        if sink is not None:
            print(f"Alert emails: {sink.url} -> {sink.directory} (each printed here as "
                  "[mail]; `geoplex telemetry notifications` lists what was sent)")
        print("Every process: geoplex mesh status", flush=True)
        print("Ctrl-C stops everything.", flush=True)
        watcher = asyncio.create_task(watch_backends(infra), name="backend-watch")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        print("\nstopping...", flush=True)
        return 0
    except (ConfigError, InfraError, SupervisorError) as exc:
        return print_error(exc)
    finally:
        if watcher is not None:  # no backend restarts while everything stops
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        if supervisor is not None:
            await supervisor.stop()
        if sink is not None:
            sink.stop()
        infra.stop()
