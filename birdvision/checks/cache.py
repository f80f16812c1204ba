"""The per-file result cache, keyed by content hash, so a re-audit only decodes changed files.

One SQLite file: ``scans`` maps ``sha256:settings`` to a file's results (JSON, the
descriptor and the report thumbnail as blobs), ``stats`` maps a path with its size and
mtime to the content hash it had, so an unchanged file is not even re-read. Only the
parent process writes; a crash loses at most the last uncommitted batch.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA = """
CREATE TABLE IF NOT EXISTS scans (key TEXT PRIMARY KEY, result TEXT NOT NULL, descriptor BLOB, thumb BLOB);
CREATE TABLE IF NOT EXISTS stats (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, sha256 TEXT);
"""


def _path_key(path: str) -> str | bytes:
    """A path as SQLite can store it: text, or its bytes when the name is not valid UTF-8."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return path.encode("utf-8", "surrogateescape")


class ScanCache:
    """Content-addressed results of :func:`birdvision.checks.scan.scan_file`."""

    def __init__(self, folder: str | Path, signature: str):
        self.folder = Path(folder).expanduser()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.signature = signature
        self.db = sqlite3.connect(self.folder / "scan-cache.sqlite3")
        self.db.executescript(SCHEMA)
        self._pending = 0

    def key(self, sha256: str) -> str:
        """Results depend on the content and on the settings that produced them."""
        return f"{sha256}:{self.signature}"

    def known_sha(self, path: str, size: int, mtime_ns: int) -> str | None:
        """The content hash recorded for this path when it had this size and mtime."""
        row = self.db.execute("SELECT size, mtime_ns, sha256 FROM stats WHERE path=?", (_path_key(path),)).fetchone()
        if row and row[0] == size and row[1] == mtime_ns:
            return row[2]
        return None

    def get(self, sha256: str) -> dict[str, Any] | None:
        """The cached result for this content, or None."""
        row = self.db.execute(
            "SELECT result, descriptor, thumb FROM scans WHERE key=?", (self.key(sha256),)
        ).fetchone()
        if row is None:
            return None
        result = json.loads(row[0])
        result["descriptor"] = None if row[1] is None else np.frombuffer(row[1], dtype=np.float32)
        result["thumb"] = row[2] or b""
        return result

    def put(self, result: dict[str, Any], size: int | None, mtime_ns: int | None) -> None:
        """Store one result (only results with a content hash are cacheable)."""
        sha = result.get("sha256")
        if not sha:
            return
        plain = {k: v for k, v in result.items() if k not in ("descriptor", "thumb", "path", "cached")}
        desc = result.get("descriptor")
        self.db.execute(
            "INSERT OR REPLACE INTO scans VALUES (?, ?, ?, ?)",
            (
                self.key(sha),
                json.dumps(plain),
                None if desc is None else np.asarray(desc, dtype=np.float32).tobytes(),
                result.get("thumb") or None,
            ),
        )
        if size is not None and mtime_ns is not None:
            self.remember(result["path"], size, mtime_ns, sha)
        self._pending += 1
        if self._pending >= 256:
            self.commit()

    def remember(self, path: str, size: int, mtime_ns: int, sha256: str) -> None:
        """Record that ``path`` with this size and mtime has this content hash."""
        self.db.execute("INSERT OR REPLACE INTO stats VALUES (?, ?, ?, ?)", (_path_key(path), size, mtime_ns, sha256))

    def commit(self) -> None:
        """Make the stored results durable."""
        self.db.commit()
        self._pending = 0

    def close(self) -> None:
        """Commit and close the database."""
        self.commit()
        self.db.close()
