"""The host's readings as samples named as node_exporter names them.

:func:`read` is the only code that asks the system (psutil, plus ``/proc/meminfo`` and
``/proc/stat`` where they exist, as node_exporter reads them); it returns plain
:class:`Readings`. :func:`node_samples` turns readings into samples and asks nothing, so
a test can hand it real readings it changed. :class:`Collector` joins the two and keeps
what must outlive one collection: the named process groups' CPU counters and the agent's
own process.

The metrics, with node_exporter's names and units (seconds, bytes, counters ``_total``):

- ``node_cpu_seconds_total{cpu,mode}`` (user, nice, system, idle, iowait, irq, softirq,
  steal where the OS has them), ``node_cpu_guest_seconds_total{cpu,mode}``;
- ``node_load1`` / ``node_load5`` / ``node_load15``;
- ``node_memory_<Field>_bytes`` for every ``/proc/meminfo`` field in kB (MemTotal,
  MemFree, MemAvailable, Buffers, Cached, SwapTotal, SwapFree...; ``Active(anon)`` is
  ``Active_anon``), ``node_memory_<Field>`` for the counts (HugePages_Total...); without
  ``/proc/meminfo``, the same names from psutil's memory and swap readings;
- ``node_filesystem_size_bytes`` / ``avail_bytes`` / ``free_bytes`` / ``files`` /
  ``files_free`` / ``readonly`` / ``device_error{device,fstype,mountpoint}``, except the
  file systems :data:`FS_TYPES_EXCLUDED` and :data:`MOUNT_POINTS_EXCLUDED` name;
- ``node_disk_reads_completed_total`` / ``writes_completed_total`` / ``read_bytes_total``
  / ``written_bytes_total`` / ``read_time_seconds_total`` / ``write_time_seconds_total``
  / ``reads_merged_total`` / ``writes_merged_total`` / ``io_time_seconds_total{device}``,
  whole disks (:data:`DISK_DEVICES_EXCLUDED`) and, so that every reported file system has
  its I/O, the partition a reported file system is mounted from;
- ``geoplex_agent_mount_info{device,mountpoint,fstype}`` = 1 per reported file system on a
  block device, ``device`` named as the disk series name it (symlinks such as
  ``/dev/mapper/vg-root`` resolved to ``dm-0``), for I/O per mount:
  ``rate(node_disk_written_bytes_total[5m]) * on (instance, device) group_left
  (mountpoint) geoplex_agent_mount_info{mountpoint="/"}``;
- ``node_network_receive_bytes_total`` / ``transmit_bytes_total`` / ``*_packets_total``
  / ``*_errs_total`` / ``*_drop_total{device}``;
- ``node_context_switches_total``, ``node_intr_total``, and from ``/proc/stat``
  ``node_forks_total``, ``node_procs_running``, ``node_procs_blocked``; process counts as
  node_exporter's processes collector names them: ``node_processes_state{state}`` (the
  kernel's state letters, R S D Z T t I ...), ``node_processes_pids`` and
  ``node_processes_threads``;
- ``node_boot_time_seconds``, ``node_time_seconds``;
- for each ``--process NAME`` (as process-exporter's ``namedprocess_namegroup_*``,
  ``groupname`` the NAME, matched against the process name ``ps -o comm`` shows):
  ``num_procs``, ``cpu_seconds_total{mode=user|system}`` (kept monotonic: a process
  that exits leaves its CPU time in the counter), ``memory_bytes{memtype=resident|
  virtual}``, ``num_threads``, ``oldest_start_time_seconds``;
- the agent itself: ``geoplex_agent_process_cpu_seconds_total{mode}``,
  ``geoplex_agent_process_resident_memory_bytes``.
"""

from __future__ import annotations

import importlib
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

# psutil ships no type information and the project's type check has no stubs for it, so
# it is imported as a plain module here; every value it returns is converted to the
# typed readings below at once, and nothing else in the agent touches psutil.
psutil: ModuleType = importlib.import_module("psutil")

Labels = tuple[tuple[str, str], ...]

# node_exporter's default --collector.filesystem.fs-types-exclude (kernel pseudo and
# read-only image file systems), plus the memory-backed tmpfs, ramfs and devtmpfs, which
# the memory metrics already cover (Shmem is tmpfs)
FS_TYPES_EXCLUDED = frozenset({
    "autofs", "binfmt_misc", "bpf", "cgroup", "cgroup2", "configfs", "debugfs", "devpts",
    "devtmpfs", "efivarfs", "erofs", "fusectl", "hugetlbfs", "iso9660", "mqueue", "nsfs",
    "overlay", "proc", "procfs", "pstore", "ramfs", "rpc_pipefs", "securityfs",
    "selinuxfs", "squashfs", "sysfs", "tmpfs", "tracefs"})
# node_exporter's default --collector.filesystem.mount-points-exclude
MOUNT_POINTS_EXCLUDED = re.compile(
    r"^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)"
    r"($|/)")
# node_exporter's default --collector.diskstats.device-exclude: RAM and loop devices,
# floppies, and partitions (their disk counts them already)
DISK_DEVICES_EXCLUDED = re.compile(r"^(z?ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$")

_CPU_GUEST_MODES = {"guest": "user", "guest_nice": "nice"}
_DISK_COUNTERS = (  # psutil field, node_exporter name, scale
    ("read_count", "node_disk_reads_completed_total", 1.0),
    ("write_count", "node_disk_writes_completed_total", 1.0),
    ("read_bytes", "node_disk_read_bytes_total", 1.0),
    ("write_bytes", "node_disk_written_bytes_total", 1.0),
    ("read_time", "node_disk_read_time_seconds_total", 0.001),
    ("write_time", "node_disk_write_time_seconds_total", 0.001),
    ("read_merged_count", "node_disk_reads_merged_total", 1.0),
    ("write_merged_count", "node_disk_writes_merged_total", 1.0),
    ("busy_time", "node_disk_io_time_seconds_total", 0.001),
)
_NETWORK_COUNTERS = (
    ("bytes_recv", "node_network_receive_bytes_total"),
    ("bytes_sent", "node_network_transmit_bytes_total"),
    ("packets_recv", "node_network_receive_packets_total"),
    ("packets_sent", "node_network_transmit_packets_total"),
    ("errin", "node_network_receive_errs_total"),
    ("errout", "node_network_transmit_errs_total"),
    ("dropin", "node_network_receive_drop_total"),
    ("dropout", "node_network_transmit_drop_total"),
)
# psutil's memory readings under /proc/meminfo's names, where there is no /proc/meminfo
_PSUTIL_MEMORY = (("total", "MemTotal"), ("free", "MemFree"), ("available", "MemAvailable"),
                  ("buffers", "Buffers"), ("cached", "Cached"), ("active", "Active"),
                  ("inactive", "Inactive"), ("shared", "Shmem"), ("slab", "Slab"),
                  ("wired", "Wired"))
_MEMINFO_LINE = re.compile(r"^([^:\s]+):\s+(\d+)(?:\s+(kB))?\s*$")
_MEMINFO_PARENS = re.compile(r"\((.*)\)")


@dataclass(frozen=True, slots=True)
class Sample:
    """One value of one series: the metric name, its own labels (not job / instance)."""

    name: str
    labels: Labels
    value: float


@dataclass(frozen=True, slots=True)
class FilesystemReading:
    device: str
    mountpoint: str
    fstype: str
    size_bytes: float = 0.0
    free_bytes: float = 0.0
    avail_bytes: float = 0.0
    files: float = 0.0
    files_free: float = 0.0
    readonly: bool = False
    error: bool = False  # statvfs failed: only node_filesystem_device_error is reported
    # the block device as the disk counters name it (/dev/mapper/vg-root -> dm-0), or ""
    disk: str = ""


@dataclass(frozen=True, slots=True)
class ProcessReading:
    pid: int
    name: str
    create_time_s: float
    cpu_user_s: float
    cpu_system_s: float
    rss_bytes: float
    vms_bytes: float
    threads: int


@dataclass(frozen=True, slots=True)
class Readings:
    """What the system said at ``time_s`` (seconds since the epoch), as plain values."""

    time_s: float
    cpu_times: Sequence[Mapping[str, float]]  # per CPU: psutil field -> seconds
    load: tuple[float, float, float]
    meminfo: Mapping[str, tuple[int, bool]] | None  # /proc/meminfo: field -> (value, kB?)
    memory: Mapping[str, float]  # psutil.virtual_memory()
    swap: Mapping[str, float]    # psutil.swap_memory()
    filesystems: Sequence[FilesystemReading]
    disks: Mapping[str, Mapping[str, float]]
    nics: Mapping[str, Mapping[str, float]]
    cpu_stats: Mapping[str, float]
    proc_stat: Mapping[str, int] | None  # /proc/stat: procs_running, procs_blocked, processes
    process_states: Mapping[str, int]  # kernel state letter (R, S, D, Z...) -> processes
    threads: int  # threads of all processes
    boot_time_s: float
    processes: Sequence[ProcessReading] = ()  # the members of the named groups


# -- reading ---------------------------------------------------------------------

def _fields(named: object) -> dict[str, float]:
    """A psutil named tuple as ``{field: float}``."""
    asdict = getattr(named, "_asdict")
    return {str(k): float(v) for k, v in asdict().items()}


def read_meminfo(path: Path = Path("/proc/meminfo")) -> dict[str, tuple[int, bool]] | None:
    """``/proc/meminfo`` as ``{field: (value, in_kB)}``; None where there is none."""
    try:
        text = path.read_text()
    except OSError:
        return None
    out: dict[str, tuple[int, bool]] = {}
    for line in text.splitlines():
        if match := _MEMINFO_LINE.match(line):
            out[match[1]] = (int(match[2]), match[3] is not None)
    return out


def read_proc_stat(path: Path = Path("/proc/stat")) -> dict[str, int] | None:
    """The process counters of ``/proc/stat``; None where there is none."""
    try:
        text = path.read_text()
    except OSError:
        return None
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(" ")
        if key in ("procs_running", "procs_blocked", "processes") and rest.strip().isdigit():
            out[key] = int(rest)
    return out


def skipped_filesystem(fstype: str, mountpoint: str) -> bool:
    """True for the file systems not reported: the pseudo and memory-backed types
    (:data:`FS_TYPES_EXCLUDED`) and the mount points of :data:`MOUNT_POINTS_EXCLUDED`."""
    return fstype in FS_TYPES_EXCLUDED or MOUNT_POINTS_EXCLUDED.match(mountpoint) is not None


def _disk_name(device: str) -> str:
    """The kernel's name of a block device path, as the disk counters name it: symlinks
    (``/dev/mapper/…``, ``/dev/disk/by-uuid/…``) resolved; "" for no device file."""
    if not device.startswith("/dev/"):
        return ""
    return os.path.basename(os.path.realpath(device))


def _read_filesystems() -> list[FilesystemReading]:
    found: list[FilesystemReading] = []
    seen: set[tuple[str, str, str]] = set()
    for part in psutil.disk_partitions(all=True):
        device, mountpoint, fstype = str(part.device), str(part.mountpoint), str(part.fstype)
        key = (device, mountpoint, fstype)
        if skipped_filesystem(fstype, mountpoint) or key in seen:
            continue
        seen.add(key)
        disk = _disk_name(device)
        try:
            st = os.statvfs(mountpoint)
        except OSError:
            found.append(FilesystemReading(device, mountpoint, fstype, error=True, disk=disk))
            continue
        found.append(FilesystemReading(
            device, mountpoint, fstype, disk=disk, size_bytes=float(st.f_blocks * st.f_frsize),
            free_bytes=float(st.f_bfree * st.f_frsize),
            avail_bytes=float(st.f_bavail * st.f_frsize), files=float(st.f_files),
            files_free=float(st.f_ffree), readonly=bool(st.f_flag & os.ST_RDONLY)))
    return found


def _read_processes(groups: Sequence[str]) -> list[ProcessReading]:
    wanted = set(groups)
    found: list[ProcessReading] = []
    if not wanted:
        return found
    for proc in psutil.process_iter(["name"]):
        name = proc.info.get("name")
        if name not in wanted:
            continue
        try:
            with proc.oneshot():
                cpu = proc.cpu_times()
                mem = proc.memory_info()
                found.append(ProcessReading(
                    int(proc.pid), str(name), float(proc.create_time()), float(cpu.user),
                    float(cpu.system), float(mem.rss), float(mem.vms),
                    int(proc.num_threads())))
        except psutil.Error:  # gone, or not ours to read
            continue
    return found


# psutil's status words as the kernel's state letters, which node_exporter reports
_STATE_LETTER = {
    psutil.STATUS_RUNNING: "R", psutil.STATUS_SLEEPING: "S", psutil.STATUS_DISK_SLEEP: "D",
    psutil.STATUS_STOPPED: "T", psutil.STATUS_TRACING_STOP: "t", psutil.STATUS_ZOMBIE: "Z",
    psutil.STATUS_DEAD: "X", psutil.STATUS_WAKING: "W",
    psutil.STATUS_PARKED: "P", psutil.STATUS_IDLE: "I", psutil.STATUS_LOCKED: "L",
    psutil.STATUS_WAITING: "W", "wake-kill": "K",  # psutil names no constant for K
}


def _process_counts() -> tuple[dict[str, int], int]:
    """Processes by state letter, and their threads, from one pass over the process table."""
    counts: dict[str, int] = {}
    threads = 0
    for proc in psutil.process_iter(["status", "num_threads"]):
        status = str(proc.info.get("status") or "")
        letter = _STATE_LETTER.get(status, status or "?")
        counts[letter] = counts.get(letter, 0) + 1
        threads += int(proc.info.get("num_threads") or 0)
    return counts, threads


def read(process_groups: Sequence[str] = ()) -> Readings:
    """The host's readings now (and the processes named ``process_groups``)."""
    now = time.time()
    proc_stat = read_proc_stat()
    try:
        load = tuple(float(v) for v in psutil.getloadavg())
    except (OSError, AttributeError):
        load = (0.0, 0.0, 0.0)
    try:
        disks = psutil.disk_io_counters(perdisk=True) or {}
    except (OSError, RuntimeError):
        disks = {}
    states, threads = _process_counts()
    return Readings(
        time_s=now,
        cpu_times=[_fields(t) for t in psutil.cpu_times(percpu=True)],
        load=(load[0], load[1], load[2]),
        meminfo=read_meminfo(),
        memory=_fields(psutil.virtual_memory()),
        swap=_fields(psutil.swap_memory()),
        filesystems=_read_filesystems(),
        disks={str(k): _fields(v) for k, v in disks.items()},
        nics={str(k): _fields(v) for k, v in (psutil.net_io_counters(pernic=True)
                                             or {}).items()},
        cpu_stats=_fields(psutil.cpu_stats()),
        proc_stat=proc_stat,
        process_states=states,
        threads=threads,
        boot_time_s=float(psutil.boot_time()),
        processes=_read_processes(process_groups),
    )


# -- readings to samples ------------------------------------------------------------

def _memory_samples(readings: Readings) -> Iterable[Sample]:
    if readings.meminfo is not None:
        for key, (value, in_kb) in readings.meminfo.items():
            name = _MEMINFO_PARENS.sub(r"_\1", key)
            if in_kb:
                yield Sample(f"node_memory_{name}_bytes", (), float(value * 1024))
            else:
                yield Sample(f"node_memory_{name}", (), float(value))
        return
    for source, name in _PSUTIL_MEMORY:
        if source in readings.memory:
            yield Sample(f"node_memory_{name}_bytes", (), readings.memory[source])
    if "total" in readings.swap:
        yield Sample("node_memory_SwapTotal_bytes", (), readings.swap["total"])
    if "free" in readings.swap:
        yield Sample("node_memory_SwapFree_bytes", (), readings.swap["free"])


def _filesystem_samples(readings: Readings) -> Iterable[Sample]:
    for fs in readings.filesystems:
        labels = (("device", fs.device), ("fstype", fs.fstype), ("mountpoint", fs.mountpoint))
        yield Sample("node_filesystem_device_error", labels, 1.0 if fs.error else 0.0)
        if fs.error:
            continue
        yield Sample("node_filesystem_size_bytes", labels, fs.size_bytes)
        yield Sample("node_filesystem_free_bytes", labels, fs.free_bytes)
        yield Sample("node_filesystem_avail_bytes", labels, fs.avail_bytes)
        yield Sample("node_filesystem_files", labels, fs.files)
        yield Sample("node_filesystem_files_free", labels, fs.files_free)
        yield Sample("node_filesystem_readonly", labels, 1.0 if fs.readonly else 0.0)


def _mount_samples(readings: Readings) -> Iterable[Sample]:
    for fs in readings.filesystems:
        if fs.disk in readings.disks:
            yield Sample("geoplex_agent_mount_info", (
                ("device", fs.disk), ("fstype", fs.fstype), ("mountpoint", fs.mountpoint)), 1.0)


def node_samples(readings: Readings) -> list[Sample]:
    """Every node_exporter-named sample of ``readings`` (the named groups' aside)."""
    out: list[Sample] = []
    for cpu, times in enumerate(readings.cpu_times):
        for mode, seconds in sorted(times.items()):
            if mode in _CPU_GUEST_MODES:
                out.append(Sample("node_cpu_guest_seconds_total",
                                  (("cpu", str(cpu)), ("mode", _CPU_GUEST_MODES[mode])),
                                  seconds))
            else:
                out.append(Sample("node_cpu_seconds_total",
                                  (("cpu", str(cpu)), ("mode", mode)), seconds))
    for minutes, value in zip((1, 5, 15), readings.load):
        out.append(Sample(f"node_load{minutes}", (), value))
    out.extend(_memory_samples(readings))
    out.extend(_filesystem_samples(readings))
    mounted = {fs.disk for fs in readings.filesystems}
    for device, counters in sorted(readings.disks.items()):
        if DISK_DEVICES_EXCLUDED.match(device) and device not in mounted:
            continue
        for source, name, scale in _DISK_COUNTERS:
            if source in counters:
                out.append(Sample(name, (("device", device),), counters[source] * scale))
    out.extend(_mount_samples(readings))
    for device, counters in sorted(readings.nics.items()):
        for source, name in _NETWORK_COUNTERS:
            if source in counters:
                out.append(Sample(name, (("device", device),), counters[source]))
    if "ctx_switches" in readings.cpu_stats:
        out.append(Sample("node_context_switches_total", (),
                          readings.cpu_stats["ctx_switches"]))
    if "interrupts" in readings.cpu_stats:
        out.append(Sample("node_intr_total", (), readings.cpu_stats["interrupts"]))
    if readings.proc_stat is not None:
        for source, name in (("processes", "node_forks_total"),
                             ("procs_running", "node_procs_running"),
                             ("procs_blocked", "node_procs_blocked")):
            if source in readings.proc_stat:
                out.append(Sample(name, (), float(readings.proc_stat[source])))
    for state, count in sorted(readings.process_states.items()):
        out.append(Sample("node_processes_state", (("state", state),), float(count)))
    out.append(Sample("node_processes_pids", (), float(sum(readings.process_states.values()))))
    out.append(Sample("node_processes_threads", (), float(readings.threads)))
    out.append(Sample("node_boot_time_seconds", (), readings.boot_time_s))
    out.append(Sample("node_time_seconds", (), readings.time_s))
    return out


class ProcessGroups:
    """The named process groups' counters, kept across collections: a group's CPU
    seconds grow by what its processes used since the last look (a new process brings
    all it used), and what an exited process used stays counted."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(dict.fromkeys(names))
        self._cpu: dict[str, list[float]] = {name: [0.0, 0.0] for name in self.names}
        self._seen: dict[tuple[int, float], tuple[float, float]] = {}

    def samples(self, readings: Readings) -> list[Sample]:
        members: dict[str, list[ProcessReading]] = {name: [] for name in self.names}
        seen: dict[tuple[int, float], tuple[float, float]] = {}
        for proc in readings.processes:
            group = proc.name
            if group not in members:
                continue
            members[group].append(proc)
            key = (proc.pid, proc.create_time_s)
            before_user, before_system = self._seen.get(key, (0.0, 0.0))
            totals = self._cpu[group]
            totals[0] += max(0.0, proc.cpu_user_s - before_user)
            totals[1] += max(0.0, proc.cpu_system_s - before_system)
            seen[key] = (max(before_user, proc.cpu_user_s),
                         max(before_system, proc.cpu_system_s))
        self._seen = seen
        out: list[Sample] = []
        for name, procs in members.items():
            labels = (("groupname", name),)
            out.append(Sample("namedprocess_namegroup_num_procs", labels, float(len(procs))))
            user, system = self._cpu[name]
            out.append(Sample("namedprocess_namegroup_cpu_seconds_total",
                              (*labels, ("mode", "user")), user))
            out.append(Sample("namedprocess_namegroup_cpu_seconds_total",
                              (*labels, ("mode", "system")), system))
            out.append(Sample("namedprocess_namegroup_memory_bytes",
                              (*labels, ("memtype", "resident")),
                              sum(p.rss_bytes for p in procs)))
            out.append(Sample("namedprocess_namegroup_memory_bytes",
                              (*labels, ("memtype", "virtual")),
                              sum(p.vms_bytes for p in procs)))
            out.append(Sample("namedprocess_namegroup_num_threads", labels,
                              float(sum(p.threads for p in procs))))
            if procs:
                out.append(Sample("namedprocess_namegroup_oldest_start_time_seconds", labels,
                                  min(p.create_time_s for p in procs)))
        return out


@dataclass(frozen=True, slots=True)
class Collection:
    """One collection: its time (ms since the epoch), how long reading took, the samples."""

    time_ms: int
    duration_s: float
    samples: list[Sample]


class Collector:
    """Reads the host (and the named process groups) into a :class:`Collection`."""

    def __init__(self, process_groups: Sequence[str] = ()) -> None:
        self.groups = ProcessGroups(process_groups)
        self._me = psutil.Process()

    def own_samples(self) -> list[Sample]:
        """The agent's own CPU seconds and resident memory."""
        try:
            with self._me.oneshot():
                cpu = self._me.cpu_times()
                rss = float(self._me.memory_info().rss)
        except psutil.Error:
            return []
        return [Sample("geoplex_agent_process_cpu_seconds_total", (("mode", "user"),),
                       float(cpu.user)),
                Sample("geoplex_agent_process_cpu_seconds_total", (("mode", "system"),),
                       float(cpu.system)),
                Sample("geoplex_agent_process_resident_memory_bytes", (), rss)]

    def collect(self) -> Collection:
        started = time.perf_counter()
        readings = read(self.groups.names)
        samples = node_samples(readings)
        samples.extend(self.groups.samples(readings))
        samples.extend(self.own_samples())
        return Collection(int(readings.time_s * 1000), time.perf_counter() - started, samples)
