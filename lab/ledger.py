"""The write ledger: every write the database acknowledged, kept outside the database.

"Zero data loss" is only provable against a record the database cannot rewrite: the load
generator appends each committed row's id and content digest here after COMMIT returns, and
`check_ledger` later looks every one of them up on whichever database should now hold them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The digest the database computes itself at insert time, so the check compares like with like.
DIGEST_SQL = "md5(data::text)"
CHECK_BATCH = 5_000


class AppendOnlyLines:
    """A file threads append whole lines to: the lock keeps their lines apart, and line buffering
    hands each line to the OS as it is written, so a killed writer leaves at most a torn last line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", buffering=1)
        self._lock = threading.Lock()

    def append(self, line: str) -> None:
        with self._lock:
            self._file.write(f"{line}\n")

    def close(self) -> None:
        with self._lock:
            self._file.close()


class Ledger(AppendOnlyLines):
    """Append-only `id digest` lines; a line is written only after its COMMIT succeeded."""

    def record(self, row_id: int, digest: str) -> None:
        self.append(f"{row_id} {digest}")


def read_ledger(path: Path) -> dict[int, str]:
    """Acknowledged rows; a torn last line (the writer was killed mid-write) is ignored."""
    entries: dict[int, str] = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit() and len(parts[1]) == 32:
            entries[int(parts[0])] = parts[1]
    return entries


@dataclass
class LedgerReport:
    checked: int = 0
    missing: list[int] = field(default_factory=list)
    changed: list[int] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return len(self.missing) + len(self.changed)

    def summary(self) -> str:
        return (
            f"{self.checked} acknowledged writes checked: {len(self.missing)} missing "
            f"{self.missing[:10]}, {len(self.changed)} changed {self.changed[:10]}"
        )


def check_ledger(path: Path, connection: Any, table: str = "records") -> LedgerReport:
    """Look every acknowledged write up in `table` through a DB-API connection."""
    from psycopg2 import sql

    expected = read_ledger(path)
    report = LedgerReport(checked=len(expected))
    ids = sorted(expected)
    query = sql.SQL("SELECT id, {digest} FROM {table} WHERE id = ANY(%s)").format(
        digest=sql.SQL(DIGEST_SQL), table=sql.Identifier(table)
    )
    with connection.cursor() as cursor:
        for start in range(0, len(ids), CHECK_BATCH):
            batch = ids[start : start + CHECK_BATCH]
            cursor.execute(query, (batch,))
            found = dict(cursor.fetchall())
            for row_id in batch:
                if row_id not in found:
                    report.missing.append(row_id)
                elif found[row_id] != expected[row_id]:
                    report.changed.append(row_id)
    return report
