"""Run a module as ``__main__`` under ``tracemalloc`` and report, every interval, what grew.

    python -m bench.memtrace <module> <out-file> [interval-seconds]

The module runs as ``python -m <module>`` would run it (``runpy``, ``sys.argv == [module]``), in
this process. The modules its ``__main__`` imports at the top are imported first, untraced: under
``tracemalloc`` with 25 frames the services' imports (pydantic schemas, the regular expressions of
``email_validator``) take minutes instead of about two seconds, and what they allocate once is
not growth. Then ``tracemalloc`` records 25 frames of every allocation (``HERALD_MEMTRACE_FRAMES``
changes it: on Python 3.11 every allocation costs about a microsecond per frame kept, which slows
a service down several times). A daemon thread waits one interval (the warm-up: pools and caches
filled), takes the baseline snapshot, and then every interval takes another and appends to the
out-file what grew since the baseline:

* the memory traced by Python now, its peak since the last snapshot, tracemalloc's own memory,
  and the process's resident memory (VmRSS);
* the top 25 source lines by growth (``size_diff``) with the change in the number of blocks;
* the top 10 growths grouped by traceback, with their innermost frames and source;
* the object types whose counts (``gc.get_objects``) grew the most.

Traces whose most recent frame is in ``tracemalloc``, ``importlib``, ``linecache`` or this file
are left out. Memory that grows here with the number of requests is a leak in Python objects;
resident memory that grows while the traced total stays flat is the allocator (arenas,
fragmentation) or memory allocated outside Python's allocators (C libraries).

Signals are the service's: it installs its own SIGTERM and SIGINT handlers and stops as it
always does; the thread is a daemon and does not hold the process up at exit.
"""

from __future__ import annotations

import ast
import gc
import importlib
import importlib.abc
import importlib.util
import itertools
import linecache
import os
import runpy
import sys
import threading
import time
import tracemalloc
from _tracemalloc import _get_traces
from operator import itemgetter
from pathlib import Path
from typing import TypeVar

FRAMES = 25
FRAMES_ENV = "HERALD_MEMTRACE_FRAMES"
"""Overrides ``FRAMES``."""
TOP_LINES = 25
TOP_TRACEBACKS = 10
TRACEBACK_FRAMES = 6
TOP_TYPES = 12
DEFAULT_INTERVAL = 60.0
MIB = 1024 * 1024

EXCLUDED = frozenset(
    {
        tracemalloc.__file__,
        __file__,
        linecache.__file__,  # the source lines these reports quote
        "<frozen importlib._bootstrap>",
        "<frozen importlib._bootstrap_external>",
        "<unknown>",
    }
)
"""Traces whose most recent frame is in one of these files are left out."""

FrameKey = tuple[str, int]
"""(filename, lineno)."""
TracebackKey = tuple[FrameKey, ...]
"""The most recent frame first, as ``_tracemalloc`` gives it."""
K = TypeVar("K", FrameKey, TracebackKey)


class Grouped:
    """Traced memory by traceback and by line: {key: (size, count)}.

    ``Snapshot.statistics`` and ``Snapshot.filter_traces`` do this in Python with an object or
    two per trace, and every allocation of this thread is traced too (25 frames): tens of seconds
    for a busy service. Here the traces are sorted in C and summed without allocating per trace.
    """

    def __init__(self) -> None:
        self.tracebacks: dict[TracebackKey, tuple[int, int]] = {}
        self.lines: dict[FrameKey, tuple[int, int]] = {}
        self.total = 0

    @classmethod
    def now(cls) -> Grouped:
        grouped = cls()
        raw = sorted(_get_traces(), key=itemgetter(2))
        for key, traces in itertools.groupby(raw, key=itemgetter(2)):
            traceback: TracebackKey = tuple(key)
            if not traceback or traceback[0][0] in EXCLUDED:
                continue
            sizes = [trace[1] for trace in traces]
            size, count = sum(sizes), len(sizes)
            grouped.tracebacks[traceback] = (size, count)
            line_size, line_count = grouped.lines.get(traceback[0], (0, 0))
            grouped.lines[traceback[0]] = (line_size + size, line_count + count)
            grouped.total += size
        return grouped


def _growth(
    now: dict[K, tuple[int, int]], baseline: dict[K, tuple[int, int]], top: int
) -> list[tuple[K, int, int, int, int]]:
    """The ``top`` keys by growth: (key, size, size_diff, count, count_diff), size_diff > 0."""
    rows = []
    for key, (size, count) in now.items():
        old_size, old_count = baseline.get(key, (0, 0))
        if size > old_size:
            rows.append((key, size, size - old_size, count, count - old_count))
    rows.sort(key=itemgetter(2), reverse=True)
    return rows[:top]


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
    ``collections.Counter``) so that the dict's own memory is left out of the snapshots."""
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


def _frame(frame: FrameKey) -> str:
    return f"{_short(frame[0])}:{frame[1]}"


def _sizes(size: int, size_diff: int, count: int, count_diff: int) -> str:
    return (
        f"{size_diff / 1024:+10.1f} KiB {count_diff:+8,d} blocks  "
        f"(now {size / 1024:,.1f} KiB in {count:,})"
    )


class Tracer:
    """Snapshots every ``interval`` seconds, compared with the one after the warm-up."""

    def __init__(self, module: str, out: Path, interval: float) -> None:
        self.module = module
        self.out = out
        self.interval = interval
        self.started = time.monotonic()
        self.baseline: Grouped | None = None
        self.baseline_types: dict[str, int] = {}
        self.baseline_at = 0.0
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
                f"tracemalloc on: {tracemalloc.get_traceback_limit()} frames, a report every "
                f"{self.interval:g}s against the snapshot after a {self.interval:g}s warm-up "
                "(times below from now)\n\n"
            )
            self.started = time.monotonic()
            deadline = self.started
            while True:
                # The next one an interval after this one was due, or a second after it ended
                # when it overran (a slow snapshot): never two in a row.
                deadline = max(deadline + self.interval, time.monotonic() + 1.0)
                time.sleep(max(0.0, deadline - time.monotonic()))
                if self.baseline is None:
                    self._take_baseline()
                else:
                    self._report()
        except Exception as exc:  # a daemon thread: say what failed rather than vanish
            self._write(f"memtrace failed: {exc!r}\n")

    def _state(self, taken: float, traced: int, types: dict[str, int]) -> str:
        current, peak = tracemalloc.get_traced_memory()
        own = tracemalloc.get_tracemalloc_memory()
        tracemalloc.reset_peak()
        return (
            f"traced (filtered) {traced / MIB:.2f} MiB, traced (all) {current / MIB:.2f} MiB, "
            f"peak since the last snapshot {peak / MIB:.2f} MiB, tracemalloc's own "
            f"{own / MIB:.2f} MiB, rss {_rss_mib() or 0:.1f} MiB, "
            f"{sum(types.values()):,} gc objects (snapshot took {time.monotonic() - taken:.1f}s)"
        )

    def _take_baseline(self) -> None:
        taken = time.monotonic()
        gc.collect()
        self.baseline = Grouped.now()
        self.baseline_types = _type_counts()
        self.baseline_at = taken
        state = self._state(taken, self.baseline.total, self.baseline_types)
        self._write(f"--- baseline at +{taken - self.started:.0f}s: {state}\n\n")

    def _report(self) -> None:
        assert self.baseline is not None
        taken = time.monotonic()
        types = _type_counts()  # before ``now``'s objects exist, as the baseline's were not counted
        now = Grouped.now()
        growth = now.total - self.baseline.total
        rate = growth / MIB / max(1e-9, (taken - self.baseline_at) / 60)
        state = self._state(taken, now.total, types)
        lines = [
            f"--- +{taken - self.started:.0f}s ({time.strftime('%H:%M:%S')}), "
            f"{taken - self.baseline_at:.0f}s after the baseline: traced growth "
            f"{growth / MIB:+.2f} MiB ({rate:+.3f} MiB/min); {state}",
            f"top {TOP_LINES} lines by growth since the baseline:",
        ]
        for line, *sizes in _growth(now.lines, self.baseline.lines, TOP_LINES):
            lines.append(f"  {_sizes(*sizes)}  {_frame(line)}")
        lines.append(f"top {TOP_TRACEBACKS} tracebacks by growth (innermost frame first):")
        for traceback, *sizes in _growth(now.tracebacks, self.baseline.tracebacks, TOP_TRACEBACKS):
            lines.append(f"  {_sizes(*sizes)}")
            for frame in traceback[:TRACEBACK_FRAMES]:
                source = linecache.getline(frame[0], frame[1]).strip()
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
    tracemalloc.start(int(os.environ.get(FRAMES_ENV, FRAMES)))
    threading.Thread(target=tracer.run, name="memtrace", daemon=True).start()
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
