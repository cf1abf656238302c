"""Tab-separated certification logs: Cohen et al.'s first six columns (``idx label predict radius
correct time``) then our extra columns, written one flushed row at a time and resumable.

Resuming: rows already in the file are kept and their ``idx`` skipped; a torn last line (the process
was killed mid-write) is cut off first. A sidecar ``<log>.json`` records the run's settings, and a
rerun with different settings is refused rather than mixing two experiments in one log.
"""
from __future__ import annotations

import datetime
import json
import math
import os
from pathlib import Path

from fastcert.io.readers import read_table

COHEN_COLUMNS = ["idx", "label", "predict", "radius", "correct", "time"]


def format_time(seconds: float) -> str:
    """H:MM:SS.ffffff, as Cohen et al.'s code writes str(datetime.timedelta(...))."""
    s = str(datetime.timedelta(seconds=float(seconds)))
    return s if "." in s else s + ".000000"


def radius_tag(r: float) -> str:
    """Kumar et al.'s column suffix of a radius: R * 100 ('00', '25', '100'); off the 0.01 grid,
    '12p5' (read back by fastcert.io.readers.tag_radius)."""
    h = round(float(r) * 100, 9)
    if h == int(h):
        return f"{int(h):02d}"
    return f"{h:g}".replace(".", "p")


def floor_str(value, digits: int = 6) -> str:
    """A radius or lower bound written with ``digits`` decimals, rounded DOWN so that a log never
    claims more than was certified; integers and infinities are written as such."""
    if isinstance(value, int):
        return str(value)
    v = float(value)
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    q = math.floor(v * 10**digits) / 10**digits
    return f"{q:.{digits}f}".rstrip("0").rstrip(".") if q != int(q) else str(float(q))


class SettingsMismatch(ValueError):
    """A resumed log was written with other settings; ``diff`` lists (key, old value, new value)."""

    def __init__(self, path, diff):
        self.path, self.diff = Path(path), list(diff)
        what = "; ".join(f"{k}: was {a!r}, now {b!r}" for k, a, b in self.diff)
        super().__init__(f"out: {self.path} was written with different settings ({what}); use another --out")


class LogWriter:
    """Append-only TSV log with resume. ``settings`` (a JSON-able dict) must match on resume."""

    def __init__(self, path, columns, settings: dict | None = None):
        if list(columns[: len(COHEN_COLUMNS)]) != COHEN_COLUMNS and columns[0] != "idx":
            raise ValueError("log columns must start with idx")
        self.path = Path(path)
        self.columns = list(columns)
        self.done: set[int] = set()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        meta = Path(str(self.path) + ".json")
        if settings is not None:
            if meta.exists() and self.path.exists():
                try:
                    old = json.loads(meta.read_text())
                except (OSError, ValueError):
                    raise ValueError(f"out: the settings file {meta} is unreadable; delete it and {self.path} "
                                     "to start over, or use another --out") from None
                new = json.loads(json.dumps(settings))
                diff = [(k, old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
                if diff:
                    raise SettingsMismatch(self.path, diff)
            else:
                tmp = meta.with_suffix(".json.tmp")
                tmp.write_text(json.dumps(settings, indent=1, sort_keys=True))
                os.replace(tmp, meta)
        if self.path.exists() and self.path.stat().st_size > 0:
            self._load_existing()
            self.f = open(self.path, "a", encoding="utf-8")
        else:
            self.f = open(self.path, "w", encoding="utf-8")
            self.f.write("\t".join(self.columns) + "\n")
            self._sync()

    def _load_existing(self):
        data = self.path.read_bytes()
        if not data.endswith(b"\n"):  # torn last row: drop it
            cut = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as f:
                f.truncate(cut)
            data = data[:cut]
        if not data.strip():
            with open(self.path, "w", encoding="utf-8") as f:
                f.write("\t".join(self.columns) + "\n")
            return
        table = read_table(self.path, "log", ragged=True)
        if table.header != self.columns:
            raise ValueError(f"out: {self.path} has columns {table.header}, expected {self.columns}; "
                             "use another --out")
        for i, row in enumerate(table.rows):
            if len(row) != len(self.columns) or not row[0].isdigit():
                raise ValueError(f"out: {table.error(i, 'not a row of this log (field count or idx)')}; "
                                 "use another --out")
            self.done.add(int(row[0]))

    def _sync(self):
        self.f.flush()
        os.fsync(self.f.fileno())

    def write(self, row: dict) -> None:
        """Append one row (unless its idx is done) and sync."""
        self.write_many([row])

    def write_many(self, rows) -> None:
        """Append several rows (those whose idx is not done yet) and sync once: a kill leaves a prefix of
        them, at worst with a torn last line, which a resume cuts off."""
        for row in rows:
            idx = int(row["idx"])
            if idx not in self.done:
                self.f.write("\t".join(str(row[c]) for c in self.columns) + "\n")
                self.done.add(idx)
        self._sync()

    def close(self):
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
