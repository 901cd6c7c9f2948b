"""The agent's collector on this real machine: node_exporter's names and units, sane values,
pseudo file systems and partitions left out, process groups counted monotonically."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from geoplex.tools.agent import collect
from geoplex.tools.agent.collect import Collector, Sample, node_samples, read, read_meminfo
from polling import eventually

CPU_MODES = {"user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"}


def by_name(samples: list[Sample], name: str) -> list[Sample]:
    return [s for s in samples if s.name == name]


def one(samples: list[Sample], name: str) -> float:
    found = by_name(samples, name)
    assert len(found) == 1, f"{name}: {found}"
    return found[0].value


def cpu_total(samples: list[Sample]) -> float:
    return sum(s.value for s in by_name(samples, "node_cpu_seconds_total"))


def test_a_collection_has_node_exporter_names_with_sane_values() -> None:
    collection = Collector().collect()
    samples = collection.samples
    assert abs(collection.time_ms / 1000 - time.time()) < 60

    cpus = {dict(s.labels)["cpu"] for s in by_name(samples, "node_cpu_seconds_total")}
    assert len(cpus) == collect.psutil.cpu_count()
    modes = {dict(s.labels)["mode"] for s in by_name(samples, "node_cpu_seconds_total")}
    assert {"user", "system", "idle"} <= modes <= CPU_MODES
    assert all(s.value >= 0 for s in by_name(samples, "node_cpu_seconds_total"))

    for name in ("node_load1", "node_load5", "node_load15"):
        assert one(samples, name) >= 0
    total = one(samples, "node_memory_MemTotal_bytes")
    assert total > 64 * 2 ** 20
    assert 0 < one(samples, "node_memory_MemAvailable_bytes") <= total
    assert 0 <= one(samples, "node_memory_MemFree_bytes") <= total
    assert 0 <= one(samples, "node_memory_SwapFree_bytes") <= one(
        samples, "node_memory_SwapTotal_bytes")

    sizes = by_name(samples, "node_filesystem_size_bytes")
    assert sizes, "at least one file system"
    for size in sizes:
        assert set(dict(size.labels)) == {"device", "fstype", "mountpoint"}
        assert size.value > 0
        avail = [s for s in by_name(samples, "node_filesystem_avail_bytes")
                 if s.labels == size.labels]
        free = [s for s in by_name(samples, "node_filesystem_free_bytes")
                if s.labels == size.labels]
        assert 0 <= avail[0].value <= free[0].value <= size.value

    assert by_name(samples, "node_network_receive_bytes_total")
    assert {dict(s.labels)["device"] for s in by_name(
        samples, "node_network_transmit_bytes_total")} >= {"lo"}
    boot = one(samples, "node_boot_time_seconds")
    now = one(samples, "node_time_seconds")
    assert 0 < boot < now
    assert abs(now - time.time()) < 60
    assert one(samples, "node_procs_running") >= 1  # this test, at least
    assert one(samples, "node_procs_blocked") >= 0
    assert one(samples, "geoplex_agent_process_resident_memory_bytes") > 1e6

    keys = [(s.name, s.labels) for s in samples]
    assert len(keys) == len(set(keys)), "each series once per collection"
    assert all(s.name.startswith(("node_", "geoplex_agent_")) for s in samples)


async def test_cpu_counters_grow_between_collections() -> None:
    collector = Collector()
    first = cpu_total(collector.collect().samples)
    await eventually(lambda: cpu_total(collector.collect().samples) > first,
                     what="node_cpu_seconds_total grows", every=0.05)


def test_pseudo_and_memory_file_systems_are_not_reported() -> None:
    mounted = {(p.fstype, p.mountpoint) for p in collect.psutil.disk_partitions(all=True)}
    reported = {(dict(s.labels)["fstype"], dict(s.labels)["mountpoint"])
                for s in by_name(Collector().collect().samples, "node_filesystem_size_bytes")}
    assert reported <= mounted
    assert not {fs for fs in reported if fs[0] in collect.FS_TYPES_EXCLUDED}
    skipped = {fs for fs in mounted if collect.skipped_filesystem(*fs)}
    assert skipped.isdisjoint(reported)
    # what node_exporter's default lists leave out, plus tmpfs
    for fstype, mountpoint in [("proc", "/proc"), ("sysfs", "/sys"), ("tmpfs", "/run"),
                               ("overlay", "/"), ("cgroup2", "/sys/fs/cgroup"),
                               ("ext4", "/var/lib/docker/overlay2/abc/merged"),
                               ("ext4", "/dev/shm")]:
        assert collect.skipped_filesystem(fstype, mountpoint), (fstype, mountpoint)
    for fstype, mountpoint in [("ext4", "/"), ("xfs", "/data"), ("nfs4", "/mnt/share"),
                               ("btrfs", "/var/lib/dockerish")]:
        assert not collect.skipped_filesystem(fstype, mountpoint), (fstype, mountpoint)


def test_partitions_ram_and_loop_devices_are_not_reported_as_disks() -> None:
    readings = read()
    disks = dict(readings.disks)
    some = next(iter(disks.values()), {"read_count": 1.0, "read_bytes": 512.0})
    disks.update({"sda": some, "sda1": some, "nvme0n1": some, "nvme0n1p2": some,
                  "loop7": some, "zram0": some, "dm-0": some})
    samples = node_samples(dataclasses.replace(readings, disks=disks))
    devices = {dict(s.labels)["device"] for s in by_name(samples, "node_disk_read_bytes_total")}
    assert {"sda", "nvme0n1", "dm-0"} <= devices
    assert devices.isdisjoint({"sda1", "nvme0n1p2", "loop7", "zram0"})


def test_a_mounted_partition_has_its_io_and_each_mount_names_its_device() -> None:
    readings = read()
    disks = dict(readings.disks)
    some = next(iter(disks.values()), {"read_count": 1.0, "read_bytes": 512.0})
    disks.update({"sda": some, "sda1": some, "sda2": some})
    data = collect.FilesystemReading("/dev/sda1", "/data", "xfs", size_bytes=1e9, disk="sda1")
    share = collect.FilesystemReading("server:/export", "/mnt/share", "nfs4", size_bytes=1e9)
    samples = node_samples(dataclasses.replace(
        readings, disks=disks, filesystems=[*readings.filesystems, data, share]))
    devices = {dict(s.labels)["device"] for s in by_name(samples, "node_disk_read_bytes_total")}
    assert {"sda", "sda1"} <= devices and "sda2" not in devices  # sda2 is mounted nowhere
    mounts = {dict(s.labels)["mountpoint"]: dict(s.labels) for s in
              by_name(samples, "geoplex_agent_mount_info")}
    assert mounts["/data"] == {"device": "sda1", "fstype": "xfs", "mountpoint": "/data"}
    assert "/mnt/share" not in mounts  # no block device: no disk counters to join
    assert all(m["device"] in devices for m in mounts.values())
    # on this machine: every reported file system on a block device has its disk's I/O
    real = {fs.mountpoint for fs in readings.filesystems if fs.disk in readings.disks}
    assert real <= set(mounts)
    assert all(fs.disk == "" for fs in readings.filesystems
               if not fs.device.startswith("/dev/"))


@pytest.mark.skipif(not Path("/proc/meminfo").exists(), reason="no /proc/meminfo here")
def test_memory_is_every_meminfo_field_in_bytes_as_node_exporter_names_it() -> None:
    readings = read()
    meminfo = read_meminfo()
    assert meminfo is not None and readings.meminfo is not None
    samples = node_samples(readings)
    assert one(samples, "node_memory_MemTotal_bytes") == meminfo["MemTotal"][0] * 1024
    if "Active(anon)" in meminfo:
        assert by_name(samples, "node_memory_Active_anon_bytes")
    if "HugePages_Total" in meminfo:  # a count, not kB: no _bytes
        assert one(samples, "node_memory_HugePages_Total") == meminfo["HugePages_Total"][0]
    assert len(by_name_prefix(samples, "node_memory_")) == len(meminfo)


def by_name_prefix(samples: list[Sample], prefix: str) -> list[Sample]:
    return [s for s in samples if s.name.startswith(prefix)]


def test_without_proc_files_memory_and_processes_come_from_psutil() -> None:
    real = read()
    samples = node_samples(dataclasses.replace(real, meminfo=None, proc_stat=None))
    assert one(samples, "node_memory_MemTotal_bytes") == real.memory["total"]
    assert one(samples, "node_memory_MemAvailable_bytes") == real.memory["available"]
    assert one(samples, "node_memory_SwapTotal_bytes") == real.swap["total"]
    assert not by_name(samples, "node_procs_running")
    assert by_name(samples, "node_processes_state")


def test_process_counts_are_by_kernel_state_letter_with_pids_and_threads() -> None:
    samples = Collector().collect().samples
    states = {dict(s.labels)["state"]: s.value for s in by_name(samples, "node_processes_state")}
    assert "R" in states, "this collecting process is running"  # as ps shows it
    assert set(states) <= set("RSDTtZXKWPIL"), states
    pids = one(samples, "node_processes_pids")
    listed = len(collect.psutil.pids())  # the process table, counted apart
    assert abs(pids - listed) <= max(5, listed // 10), (pids, listed)
    assert one(samples, "node_processes_threads") >= pids


@pytest.fixture
def burner(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A process named ``agentburn`` (a copy of sh) spending CPU for a second or two."""
    sh = shutil.which("sh")
    assert sh is not None
    program = tmp_path / "agentburn"
    shutil.copy(sh, program)
    os.chmod(program, 0o755)
    proc = subprocess.Popen([str(program), "-c",
                             "i=0; while [ $i -lt 400000 ]; do i=$((i+1)); done"])
    try:
        yield "agentburn", proc
    finally:
        proc.kill()
        proc.wait()


async def test_a_named_process_group_keeps_its_cpu_after_the_process_exits(
        burner: tuple[str, subprocess.Popen[bytes]]) -> None:
    name, proc = burner
    collector = Collector([name])

    def group(samples: list[Sample]) -> dict[tuple[str, str], float]:
        return {(s.name, dict(s.labels).get("mode", dict(s.labels).get("memtype", ""))):
                s.value for s in samples
                if s.name.startswith("namedprocess_") and ("groupname", name) in s.labels}

    def busy() -> dict[tuple[str, str], float] | None:
        found = group(collector.collect().samples)
        cpu = (found[("namedprocess_namegroup_cpu_seconds_total", "user")]
               + found[("namedprocess_namegroup_cpu_seconds_total", "system")])
        return found if found[("namedprocess_namegroup_num_procs", "")] == 1 and cpu >= 0.05 \
            else None

    running = await eventually(busy, what="the group's CPU seconds grow", every=0.05)
    assert running is not None
    assert running[("namedprocess_namegroup_memory_bytes", "resident")] > 0
    assert running[("namedprocess_namegroup_num_threads", "")] >= 1
    assert ("namedprocess_namegroup_oldest_start_time_seconds", "") in running
    await eventually(lambda: proc.poll() is not None, what="the burner exits")
    after = group(collector.collect().samples)
    assert after[("namedprocess_namegroup_num_procs", "")] == 0
    assert after[("namedprocess_namegroup_memory_bytes", "resident")] == 0
    for mode in ("user", "system"):
        key = ("namedprocess_namegroup_cpu_seconds_total", mode)
        assert after[key] >= running[key]
