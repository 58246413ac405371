"""Processes the benchmark starts, and what /proc says about them (CPU time, peak memory)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.processes import ServiceProcess

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class BenchProcess(ServiceProcess):
    """A ``ServiceProcess`` that runs any module (a service, ``bench.sink``)."""

    module: str = ""
    args: list[str] = field(default_factory=list)
    memtrace: Path | None = None
    """When set, the module runs under ``bench.memtrace``, which appends its reports here."""
    memtrace_interval: float = 60.0
    """Seconds between memtrace's snapshots (the first one, after as long, is the baseline)."""

    @property
    def command(self) -> list[str]:
        if self.memtrace is None:
            return [sys.executable, "-m", self.module, *self.args]
        if self.args:
            raise ValueError(f"{self.name}: bench.memtrace runs a module without arguments")
        interval = f"{self.memtrace_interval:g}"
        return [sys.executable, "-m", "bench.memtrace", self.module, str(self.memtrace), interval]

    async def start(self, *, wait_ready: bool = True) -> None:
        self.starts += 1
        log = self.log_path.open("ab")
        log.write(f"--- start {self.starts} ---\n".encode())
        log.flush()
        self.process = subprocess.Popen(
            self.command,
            env={**os.environ, "HERALD_LOG_FORMAT": "json", **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        if wait_ready:
            await self.wait_ready()

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid


def _status_mb(pid: int, field: str) -> float | None:
    """A ``/proc/<pid>/status`` memory field of a live process (kB there), in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM (peak resident set size) of a live process, in MiB."""
    return _status_mb(pid, "VmHWM")


def rss_mb(pid: int) -> float | None:
    """VmRSS (resident set size now) of a live process, in MiB."""
    return _status_mb(pid, "VmRSS")


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name: [0] is field 3 (state)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def _cpu_ticks(pid: int) -> int | None:
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14 and 15 of stat)


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class ServerCpu:
    """CPU time of a multi-process server (all processes named ``comm``) at one moment."""

    live: dict[int, int]
    """utime + stime of each live process, in clock ticks."""
    reaped: int
    """cutime + cstime of the server's root processes (the postmaster): the CPU time of the
    children that have exited and been waited for, so backends that come and go still count."""

    @property
    def ticks(self) -> int:
        return sum(self.live.values()) + self.reaped


def server_cpu(comm: str = "postgres") -> ServerCpu:
    """Every process named ``comm`` on this machine (visible in /proc), all databases alike."""
    fields: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _comm(int(entry)) == comm:
            found = _stat_fields(int(entry))
            if found is not None:
                fields[int(entry)] = found
    live = {pid: int(f[11]) + int(f[12]) for pid, f in fields.items()}
    # A root's parent is not one of the server's processes (init, a shell, docker-init).
    reaped = sum(int(f[13]) + int(f[14]) for f in fields.values() if int(f[1]) not in fields)
    return ServerCpu(live, reaped)


def server_cpu_seconds(before: ServerCpu, after: ServerCpu) -> tuple[float, float]:
    """CPU seconds between two snapshots: (all, processes alive at both only)."""
    alive = sum(
        max(0, ticks - before.live[pid]) for pid, ticks in after.live.items() if pid in before.live
    )
    return (after.ticks - before.ticks) / CLOCK_TICKS, alive / CLOCK_TICKS


GROUPS = {"beam.smp": "rabbitmq", "postgres": "postgres"}
"""Server processes found by name; their per-connection children are summed."""


@dataclass
class _Snapshot:
    processes: dict[int, tuple[str, int]]  # pid -> (label, ticks)
    total: int
    idle: int


class CpuMonitor:
    """CPU used by each process over a window, in percent of one core (``nproc`` x 100 is all)."""

    def __init__(self, named: dict[str, int]) -> None:
        self._named = {pid: label for label, pid in named.items()}
        self._start: _Snapshot | None = None

    def _snapshot(self) -> _Snapshot:
        processes: dict[int, tuple[str, int]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            label = self._named.get(pid) or GROUPS.get(_comm(pid))
            if label is None:
                continue
            ticks = _cpu_ticks(pid)
            if ticks is not None:
                processes[pid] = (label, ticks)
        with open("/proc/stat") as stat:
            values = [int(v) for v in stat.readline().split()[1:]]
        return _Snapshot(processes, sum(values[:8]), values[3] + values[4])

    def start(self) -> None:
        self._start = self._snapshot()

    def stop(self) -> dict[str, float]:
        """Percent of one core per label, plus ``other`` (anything else) and ``idle``."""
        assert self._start is not None
        end = self._snapshot()
        elapsed_total = max(1, end.total - self._start.total)  # jiffies of all cores
        cores = os.cpu_count() or 1
        scale = 100.0 * cores / elapsed_total
        used: dict[str, float] = dict.fromkeys([*self._named.values(), *GROUPS.values()], 0.0)
        for pid, (label, ticks) in end.processes.items():
            before = self._start.processes.get(pid)
            delta = ticks - (before[1] if before is not None and before[0] == label else 0)
            used[label] = used.get(label, 0.0) + max(0, delta) * scale
        idle = (end.idle - self._start.idle) * scale
        busy = (elapsed_total - (end.idle - self._start.idle)) * scale
        used["other"] = max(0.0, busy - sum(used.values()))
        used["idle"] = idle
        return used


def describe_cpu(used: dict[str, float]) -> str:
    cores = os.cpu_count() or 1
    parts = [f"{label} {value:.0f}%" for label, value in used.items() if value >= 0.5]
    return f"cpu over the measured window (% of one core, {cores * 100}% in all): " + ", ".join(
        parts
    )
