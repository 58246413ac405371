"""The peers, measured in the same run: the shared harness (``../shared/bench-peers``) runs the
bare broker loop (W0) and Celery, Dramatiq and BullMQ doing one PostgreSQL UPDATE per task (W5),
and the email leg (W6: one aio-pika consumer sending over aiosmtplib to a local sink), so
Herald's figures print as ratios to them. The machines are shared and noisy: only ratios
measured side by side mean anything."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .report import ScenarioReport, number

ROOT = Path(__file__).resolve().parent.parent
PEERS_DIR = Path(os.environ.get("HERALD_BENCH_PEERS", ROOT.parent / "shared" / "bench-peers"))
"""Where the harness is: ``../shared/bench-peers`` from the project, or ``HERALD_BENCH_PEERS``."""


@dataclass
class PeerRates:
    """Jobs (or messages) a second of each peer, by a short name (``w0``, ``dramatiq`` ...)."""

    rates: dict[str, float] = field(default_factory=dict)

    def get(self, name: str) -> float | None:
        return self.rates.get(name)


def _pick(records: list[dict[str, Any]], workload: str, system: str, variant: str = "") -> float:
    """The best rate of the matching records (one repetition each, the harness's median)."""
    rates = [
        float(r["rate"])
        for r in records
        if r["workload"] == workload
        and str(r["system"]).startswith(system)
        and variant in str(r["variant"])
    ]
    if not rates:
        raise RuntimeError(f"the peer harness reported no {workload} {system} {variant}".strip())
    return max(rates)


def _read_records(out: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for path in out.glob("run-*.jsonl")
        for line in path.read_text().splitlines()
        if line.strip()
    ]


async def run_peers(report: ScenarioReport, n: int) -> PeerRates:
    """Run the harness (W0, the W2-W5 peers and the W6 email leg, one repetition) and report
    its figures."""
    script = PEERS_DIR / "run.sh"
    if not script.exists():
        report.note(f"the peer harness is not at {PEERS_DIR} (HERALD_BENCH_PEERS): no ratios")
        return PeerRates()
    out = Path(tempfile.mkdtemp(prefix="herald-peers-"))
    try:
        env = {**os.environ, "PB_REPS": "1", "PB_ONLY": "w0 peers w6", "PB_OUT": str(out),
               "PB_N": str(n), "PB_N_BROKER": str(max(n, 2 * n))}  # fmt: skip
        process = await asyncio.create_subprocess_exec(
            "bash", str(script), env=env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output, _ = await process.communicate()
        if process.returncode != 0:
            tail = output.decode(errors="replace").splitlines()[-10:]
            raise RuntimeError("the peer harness failed: " + " / ".join(tail))
        records = _read_records(out)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    peers = PeerRates(
        {
            "w0": _pick(records, "W0", "RabbitMQ quorum", "end-to-end"),
            "dramatiq": _pick(records, "W5", "Dramatiq"),
            "celery": _pick(records, "W5", "Celery"),
            "bullmq": _pick(records, "W5", "BullMQ"),
            "w6": _pick(records, "W6", "aio-pika consumer"),
        }
    )
    report.row("W0 bare broker loop msgs/s (quorum)", number(peers.rates["w0"]), "(peer)")
    report.row("W5 Dramatiq + 1 UPDATE/task, tasks/s", number(peers.rates["dramatiq"]), "(peer)")
    report.row("W5 Celery + 1 UPDATE/task, tasks/s", number(peers.rates["celery"]), "(peer)")
    report.row("W5 BullMQ + 1 UPDATE/task, jobs/s", number(peers.rates["bullmq"]), "(peer)")
    report.row("W6 aio-pika -> aiosmtplib (20 conns), mails/s", number(peers.rates["w6"]), "(peer)")
    return peers
