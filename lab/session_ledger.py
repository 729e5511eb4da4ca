"""The session ledger: every session write a pod acknowledged, kept outside Redis, beside the
PostgreSQL write ledger (lab/ledger.py) and the Kafka one (lab/kafka_ledger.py).

A session write is `HINCRBY session:<token> writes 1`, acknowledged with the new count. The load
generator appends `token writes expires_at` after each acknowledgement; a write is lost when the
session's stored count is below the highest count acknowledged for it, or when the session is gone
before its TTL ran out (after it, a session is expired, not lost).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.kube.sessions import session_key
from lab.ledger import AppendOnlyLines

CHECK_BATCH = 5_000


class SessionLedger(AppendOnlyLines):
    """Append-only lines; one is written only after the pod answered the write with its count."""

    def record(self, token: str, writes: int, expires_at: float) -> None:
        self.append(f"{token} {writes} {expires_at:.3f}")


@dataclass(frozen=True)
class AcknowledgedSession:
    writes: int
    expires_at: float


def read_session_ledger(path: Path) -> tuple[int, dict[str, AcknowledgedSession]]:
    """(lines read, token -> highest count and latest expiry acknowledged); a torn line is ignored."""
    lines = 0
    sessions: dict[str, AcknowledgedSession] = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) != 3 or not parts[1].isdigit():
            continue
        try:
            expires_at = float(parts[2])
        except ValueError:
            continue
        lines += 1
        known = sessions.get(parts[0])
        if known is None:
            sessions[parts[0]] = AcknowledgedSession(int(parts[1]), expires_at)
        else:
            sessions[parts[0]] = AcknowledgedSession(
                max(known.writes, int(parts[1])), max(known.expires_at, expires_at)
            )
    return lines, sessions


@dataclass
class SessionLedgerReport:
    acknowledged: int = 0
    sessions: int = 0
    missing: list[str] = field(default_factory=list)
    # token -> (highest count acknowledged, count stored)
    behind: dict[str, tuple[int, int]] = field(default_factory=dict)
    expired: int = 0
    lost: int = 0

    def summary(self) -> str:
        return (
            f"{self.acknowledged} acknowledged session writes in {self.sessions} sessions: {self.lost} lost "
            f"({len(self.missing)} sessions missing {self.missing[:5]}, {len(self.behind)} behind "
            f"{dict(list(self.behind.items())[:5])}), {self.expired} expired"
        )


def check_session_ledger(path: Path, client: Any, now: float | None = None) -> SessionLedgerReport:
    """Look every acknowledged session up through a redis-py client (the endpoint, or one server).

    `lost` counts acknowledged writes: all of a missing session's, and a behind session's
    difference between its highest acknowledged count and its stored one.
    """
    now = time.time() if now is None else now
    lines, expected = read_session_ledger(path)
    report = SessionLedgerReport(acknowledged=lines, sessions=len(expected))
    tokens = sorted(expected)
    for start in range(0, len(tokens), CHECK_BATCH):
        batch = tokens[start : start + CHECK_BATCH]
        with client.pipeline(transaction=False) as pipe:
            for token in batch:
                pipe.hget(session_key(token), "writes")
            stored = pipe.execute()
        for token, value in zip(batch, stored, strict=True):
            acknowledged = expected[token]
            if value is None:
                if now < acknowledged.expires_at:
                    report.missing.append(token)
                    report.lost += acknowledged.writes
                else:
                    report.expired += 1
            elif int(value) < acknowledged.writes:
                report.behind[token] = (acknowledged.writes, int(value))
                report.lost += acknowledged.writes - int(value)
    return report
