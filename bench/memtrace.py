"""Run a module as ``__main__`` under ``tracemalloc`` and report, every interval, what grew.

    python -m bench.memtrace <module> <out-file> [interval-seconds]

The module runs as ``python -m <module>`` would run it (``runpy``, ``sys.argv == [module]``), in
this process. The modules its ``__main__`` imports at the top are imported first, untraced: under
``tracemalloc`` with 25 frames the services' imports (pydantic schemas, the regular expressions of
``email_validator``) take minutes instead of about two seconds, and what they allocate once is
not growth. Then ``tracemalloc`` records 25 frames of every allocation. A daemon thread waits one
interval (the warm-up: imports done, pools and caches filled), takes the baseline snapshot, and
then every interval takes another and appends to the out-file what grew since the baseline:

* the memory traced by Python now, at its peak, and the process's resident memory (VmRSS);
* the top 25 source lines by growth (``size_diff``) with the change in the number of blocks;
* the top 10 growths grouped by traceback, with their innermost frames;
* the object types whose counts (``gc.get_objects``) grew the most.

Memory that grows here with the number of requests is a leak in Python objects; resident memory
that grows while the traced total stays flat is the allocator (arenas, fragmentation) or memory
allocated outside Python's allocators (C libraries).

Signals are the service's: it installs its own SIGTERM and SIGINT handlers and stops as it
always does; the thread is a daemon and does not hold the process up at exit.
"""

from __future__ import annotations

import ast
import gc
import importlib
import importlib.abc
import importlib.util
import linecache
import os
import runpy
import sys
import threading
import time
import tracemalloc
from pathlib import Path

FRAMES = 25
TOP_LINES = 25
TOP_TRACEBACKS = 10
TRACEBACK_FRAMES = 6
TOP_TYPES = 12
DEFAULT_INTERVAL = 60.0
MIB = 1024 * 1024

_FILTERS = [
    tracemalloc.Filter(False, tracemalloc.__file__),
    tracemalloc.Filter(False, __file__),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
    tracemalloc.Filter(False, linecache.__file__),  # the source lines this report quotes
    tracemalloc.Filter(False, "<unknown>"),
]


def _rss_mib() -> float | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _type_counts() -> dict[str, int]:
    """Live objects tracked by the garbage collector, by type. Counted in this file (not with
    ``collections.Counter``) so that the dict's own memory is filtered out of the snapshots."""
    counts: dict[str, int] = {}
    for obj in gc.get_objects():
        name = type(obj).__qualname__
        counts[name] = counts.get(name, 0) + 1
    return counts


def _short(filename: str) -> str:
    """A file name without the virtualenv's, the checkout's or the standard library's prefix."""
    for marker in ("/site-packages/", "/src/"):
        if marker in filename:
            return filename.rsplit(marker, 1)[1]
    stdlib = filename.find("/lib/python3.")
    if stdlib >= 0:
        return filename[filename.find("/", stdlib + len("/lib/python3.")) + 1 :]
    return filename


def _frame(frame: tracemalloc.Frame) -> str:
    return f"{_short(frame.filename)}:{frame.lineno}"


def _snapshot() -> tracemalloc.Snapshot:
    return tracemalloc.take_snapshot().filter_traces(_FILTERS)


class Tracer:
    """Snapshots every ``interval`` seconds, compared with the one after the warm-up."""

    def __init__(self, module: str, out: Path, interval: float) -> None:
        self.module = module
        self.out = out
        self.interval = interval
        self.started = time.monotonic()
        self.baseline: tracemalloc.Snapshot | None = None
        self.baseline_types: dict[str, int] = {}
        self.baseline_at = 0.0
        self.baseline_total = 0
        self._file = out.open("a")  # open for the life of the process: no allocations per write
        self._write(f"=== memtrace of {module} (pid {os.getpid()})\n")

    def _write(self, text: str) -> None:
        self._file.write(text)
        self._file.flush()

    def note(self, text: str) -> None:
        self._write(text + "\n")

    def run(self) -> None:
        try:
            self._write(
                f"tracemalloc on: {FRAMES} frames, a report every {self.interval:g}s against the "
                f"snapshot after a {self.interval:g}s warm-up (times below from now)\n\n"
            )
            self.started = time.monotonic()
            deadline = self.started
            while True:
                deadline += self.interval
                time.sleep(max(0.0, deadline - time.monotonic()))
                if self.baseline is None:
                    self._take_baseline()
                else:
                    self._report()
        except Exception as exc:  # a daemon thread: say what failed rather than vanish
            self._write(f"memtrace failed: {exc!r}\n")

    def _take_baseline(self) -> None:
        taken = time.monotonic()
        gc.collect()
        _snapshot()  # thrown away: fills the caches filtering uses (fnmatch, re), not counted
        self.baseline = _snapshot()
        self.baseline_types = _type_counts()
        self.baseline_at = time.monotonic()
        self.baseline_total = sum(stat.size for stat in self.baseline.statistics("filename"))
        current, peak = tracemalloc.get_traced_memory()
        own = tracemalloc.get_tracemalloc_memory()
        tracemalloc.reset_peak()
        self._write(
            f"--- baseline at +{self.baseline_at - self.started:.0f}s "
            f"(taken in {self.baseline_at - taken:.1f}s): traced (filtered) "
            f"{self.baseline_total / MIB:.2f} MiB, traced (all) {current / MIB:.2f} MiB, "
            f"peak {peak / MIB:.2f} MiB, tracemalloc's own {own / MIB:.2f} MiB, "
            f"rss {_rss_mib() or 0:.1f} MiB, {sum(self.baseline_types.values()):,} gc objects\n\n"
        )

    def _report(self) -> None:
        assert self.baseline is not None
        taken = time.monotonic()
        snapshot = _snapshot()
        types = _type_counts()
        current, peak = tracemalloc.get_traced_memory()
        own = tracemalloc.get_tracemalloc_memory()
        tracemalloc.reset_peak()
        rss = _rss_mib()
        by_line = snapshot.compare_to(self.baseline, "lineno")
        by_traceback = snapshot.compare_to(self.baseline, "traceback")
        total = sum(stat.size for stat in by_line)
        growth = total - self.baseline_total
        rate = growth / MIB / max(1e-9, (taken - self.baseline_at) / 60)
        lines = [
            f"--- +{taken - self.started:.0f}s ({time.strftime('%H:%M:%S')}), "
            f"{taken - self.baseline_at:.0f}s after the baseline: traced (filtered) "
            f"{total / MIB:.2f} MiB ({growth / MIB:+.2f} MiB, {rate:+.3f} MiB/min), "
            f"traced (all) {current / MIB:.2f} MiB, peak since the last report "
            f"{peak / MIB:.2f} MiB, tracemalloc's own {own / MIB:.2f} MiB, "
            f"rss {rss or 0:.1f} MiB, {sum(types.values()):,} gc objects",
            f"top {TOP_LINES} lines by growth since the baseline:",
        ]
        grew = [stat for stat in by_line if stat.size_diff > 0]
        for stat in sorted(grew, key=lambda s: s.size_diff, reverse=True)[:TOP_LINES]:
            frame = stat.traceback[0]
            lines.append(
                f"  {stat.size_diff / 1024:+10.1f} KiB {stat.count_diff:+8,d} blocks  "
                f"(now {stat.size / 1024:,.1f} KiB in {stat.count:,})  {_frame(frame)}"
            )
        lines.append(f"top {TOP_TRACEBACKS} tracebacks by growth (innermost frame first):")
        for stat in sorted(by_traceback, key=lambda s: s.size_diff, reverse=True)[:TOP_TRACEBACKS]:
            lines.append(
                f"  {stat.size_diff / 1024:+10.1f} KiB {stat.count_diff:+8,d} blocks "
                f"(now {stat.size / 1024:,.1f} KiB in {stat.count:,})"
            )
            for frame in list(reversed(stat.traceback))[:TRACEBACK_FRAMES]:
                source = linecache.getline(frame.filename, frame.lineno).strip()
                lines.append(f"      {_frame(frame)}  {source[:90]}")
        type_growth = {
            name: count - self.baseline_types.get(name, 0) for name, count in types.items()
        }
        grown = sorted(
            ((name, diff) for name, diff in type_growth.items() if diff > 0), key=lambda kv: -kv[1]
        )[:TOP_TYPES]
        lines.append(
            "object types by growth in count: "
            + (", ".join(f"{name} {diff:+,d} ({types[name]:,})" for name, diff in grown) or "none")
        )
        lines.append(f"(report took {time.monotonic() - taken:.1f}s)\n\n")
        self._write("\n".join(lines))


def _main_code(module: str) -> tuple[str, str, str] | None:
    """(the name, the package and the source) of what ``python -m module`` runs."""
    spec = importlib.util.find_spec(module)
    if spec is not None and spec.submodule_search_locations is not None:
        module = f"{module}.__main__"
        spec = importlib.util.find_spec(module)
    if spec is None or not isinstance(spec.loader, importlib.abc.InspectLoader):
        return None
    source = spec.loader.get_source(module)
    return None if source is None else (module, module.rpartition(".")[0], source)


def preimport(module: str) -> list[str]:
    """Import what the module that ``python -m module`` runs imports at its top level (without
    running it); returns the modules imported."""
    found = _main_code(module)
    if found is None:
        return []
    name, package, source = found
    wanted: list[str] = []
    for node in ast.parse(source, name).body:
        if isinstance(node, ast.Import):
            wanted.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
            wanted.append(base)
            # ``from package import submodule``: the submodule too (a name that is no module is
            # an attribute, imported with ``base``).
            wanted.extend(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    imported = []
    for item in wanted:
        try:
            importlib.import_module(item)
        except ModuleNotFoundError as exc:
            if exc.name != item:
                raise
            continue
        imported.append(item)
    return imported


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 3):
        raise SystemExit("usage: python -m bench.memtrace <module> <out-file> [interval-seconds]")
    module, out = args[0], Path(args[1])
    interval = float(args[2]) if len(args) == 3 else DEFAULT_INTERVAL
    if interval <= 0:
        raise SystemExit(f"the interval must be positive, got {interval:g}")
    out.parent.mkdir(parents=True, exist_ok=True)
    sys.argv = [module]
    started = time.monotonic()
    imported = preimport(module)
    tracer = Tracer(module, out, interval)
    tracer.note(
        f"imported before tracing ({time.monotonic() - started:.1f}s): "
        f"{', '.join(imported) or 'nothing'}"
    )
    tracemalloc.start(FRAMES)
    threading.Thread(target=tracer.run, name="memtrace", daemon=True).start()
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
