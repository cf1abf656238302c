"""Readers of result files: one primitive for text tables (:func:`read_table`) and one reader per
published format built on it.

=========================  ==========================================================================
:func:`read_log`           certification logs with a header, tab-separated: ours (Cohen et al.'s
                           ``idx label predict radius correct time`` then extra columns), Cohen et
                           al.'s own, Lee et al.'s (``idx label predict p_hat rad. correct time``)
:func:`read_kumar_log`     Kumar et al.'s confidence logs (``exp_cdf_XX`` / ``exp_XX`` columns), and ours
:func:`read_threshold_file`  l0 thresholds: ours (``radius threshold [fraction]``) and Lee et al.'s
:func:`read_counts_file`   Jia et al.'s per-class counts (C counts then the label, no header)
=========================  ==========================================================================

Every reader raises FileNotFoundError for a missing file and ValueError naming the file (and the
line, where one is at fault) for a malformed one. Lines are numbered as in the file (1-based, blank
and comment lines counted). Readers return plain data (dicts, numpy arrays, :class:`ConfidenceLog`);
what the numbers mean is up to the smoothing and analysis modules.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

THRESHOLD_DECIMALS = 20  # threshold files: each value is the exact threshold rounded UP to this many decimals
# columns of a certification log converted to int64 when every value is integral
_INT_COLUMNS = ("idx", "label", "predict", "correct", "n_used")


# ---------------------------------------------------------------------------------------- the primitive
@dataclass
class Table:
    """A text table read by :func:`read_table`: ``header`` (column names, [] when the file has none),
    ``rows`` (lists of field strings, stripped) and ``lines`` (the file line of each row)."""

    path: str
    what: str
    header: list
    rows: list
    lines: list

    def __len__(self) -> int:
        return len(self.rows)

    def error(self, i: int, message: str) -> ValueError:
        """A ValueError naming the file and the line of row i."""
        return ValueError(f"{self.path}: line {self.lines[i]}: {message}")

    def require(self, *names: str) -> None:
        """ValueError naming the file unless every column of ``names`` is in the header."""
        for name in names:
            if name not in self.header:
                raise ValueError(f"{self.path}: not a {self.what} with a {name!r} column")

    def column(self, name: str) -> list:
        """The fields of column ``name`` (ValueError naming the file if there is no such column)."""
        self.require(name)
        j = self.header.index(name)
        return [row[j] for row in self.rows]

    def columns(self) -> dict:
        """{column name: list of field strings}, in header order."""
        return {h: [row[j] for row in self.rows] for j, h in enumerate(self.header)}


def _split(line: str, split: str) -> list:
    if split == "tab" or (split == "auto" and "\t" in line):
        return [f.strip() for f in line.split("\t")]
    return line.split()


def read_table(path, what: str = "table", *, header: bool | None = True, split: str = "tab",
               comments: bool = False, ragged: bool = False) -> Table:
    """Read a text table: blank lines skipped, and lines starting with ``#`` too when ``comments``.

    header: True (the first line names the columns), False (none: every line is a row) or None (a
    header when the first field of the first line is not a non-negative integer). split: "tab"
    (fields separated by tabs), "whitespace" (runs of whitespace) or "auto" (tabs where a line has
    one, else whitespace). Unless ``ragged``, every row must have as many fields as the header (or as
    the first row, without a header): ValueError naming the file and the line otherwise.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    text = path.read_bytes().decode("utf-8", errors="replace")
    if "\x00" in text:
        raise ValueError(f"{path}: not a text {what} (binary data)")
    numbered = [(n, ln.rstrip("\r\n")) for n, ln in enumerate(text.splitlines(), start=1)]
    numbered = [(n, ln) for n, ln in numbered if ln.strip() and not (comments and ln.lstrip().startswith("#"))]
    if not numbered:
        raise ValueError(f"{path}: empty {what}")
    names: list = []
    first = _split(numbered[0][1], split)
    if header or (header is None and not first[0].isdigit()):
        names = first
        numbered = numbered[1:]
    rows = [_split(ln, split) for _, ln in numbered]
    lines = [n for n, _ in numbered]
    if not ragged and rows:
        width, against = (len(names), "the header has") if names else (len(rows[0]), "the first row has")
        for n, row in zip(lines, rows):
            if len(row) != width:
                raise ValueError(f"{path}: line {n} has {len(row)} fields, {against} {width}")
    return Table(str(path), what, names, rows, lines)


# ---------------------------------------------------------------------------------------- field parsers
def parse_time(text: str) -> float:
    """Seconds from 'H:MM:SS[.ffffff]' (how Cohen et al.'s code and ours write time) or a plain number."""
    text = text.strip()
    if ":" in text:
        parts = text.split(":")
        if len(parts) != 3:
            raise ValueError(f"bad time {text!r}")
        h, m, s = parts
        return int(h) * 3600 + int(m) * 60 + float(s)
    return float(text)


def tag_radius(tag: str) -> float:
    """The radius of a Kumar et al. column suffix: 'XX' = R * 100 ('00', '25', '100'; ours also '12p5')."""
    if not re.fullmatch(r"\d+(p\d+)?", tag):
        raise ValueError(f"bad radius tag {tag!r}")
    return float(tag.replace("p", ".")) / 100.0


# ---------------------------------------------------------------------------------------- certification logs
def read_log(path, raw: bool = False) -> dict:
    """Read a tab-separated certification log with a header (ours, Cohen et al.'s, Lee et al.'s) into
    {column: values}: ``time`` in seconds (H:MM:SS or seconds), numeric columns as float64 arrays
    (idx, label, predict, correct, n_used as int64 where integral), other columns as object arrays of
    strings; plus ``"_path"`` and ``"_n"`` (the number of rows). ``raw=True``: every column as the list
    of its field strings, unconverted (exact decimals, e.g. lower bounds to compare with exact
    thresholds), without ``_path``/``_n``. Lines starting with ``#`` are skipped."""
    table = read_table(path, "log", comments=True)
    if len(table.header) < 2:
        raise ValueError(f"{table.path}: not a tab-separated log with a header")
    if raw:
        return table.columns()
    cols: dict = {}
    for name, vals in table.columns().items():
        if name == "time":
            cols[name] = np.array([_field(table, i, "time", parse_time, v) for i, v in enumerate(vals)],
                                  dtype=np.float64)
            continue
        try:
            arr = np.array([float(v) for v in vals], dtype=np.float64)
        except ValueError:
            cols[name] = np.array(vals, dtype=object)
            continue
        if name in _INT_COLUMNS and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        cols[name] = arr
    cols["_path"] = table.path
    cols["_n"] = len(table)
    return cols


def _field(table: Table, i: int, name: str, parse, value):
    try:
        return parse(value)
    except (ValueError, ZeroDivisionError):
        raise table.error(i, f"column {name!r}: cannot read {value!r}") from None


# ---------------------------------------------------------------------------------------- Kumar et al.
@dataclass
class ConfidenceLog:
    """A confidence log read by :func:`read_kumar_log`. Per point (N rows): idx, label, predict,
    correct (int64), time (seconds, NaN where the log has no time column). radii: (R,) float64 from
    the column names; cdf, exp: (N, R) float64 bounds (columns exp_cdf_XX and exp_XX)."""

    path: str
    idx: np.ndarray
    label: np.ndarray
    predict: np.ndarray
    correct: np.ndarray
    time: np.ndarray
    radii: np.ndarray
    cdf: np.ndarray
    exp: np.ndarray

    def __len__(self) -> int:
        return int(self.correct.size)


def read_kumar_log(path) -> ConfidenceLog:
    """Read a confidence log: Kumar et al.'s (idx label predict exp_cdf_XX... exp_XX... correct time,
    time as H:MM:SS.ffffff) or ours (any other columns allowed besides these), tab-separated."""
    table = read_table(path, "confidence log")
    table.require("idx", "label", "predict", "correct")
    header = table.header
    cdf_tags = [h[len("exp_cdf_"):] for h in header if h.startswith("exp_cdf_")]
    exp_tags = [h[len("exp_"):] for h in header if h.startswith("exp_") and not h.startswith("exp_cdf_")]
    if not cdf_tags:
        raise ValueError(f"{table.path}: not a confidence log (no exp_cdf_XX columns)")
    if sorted(cdf_tags) != sorted(exp_tags):
        raise ValueError(f"{table.path}: exp_cdf_XX and exp_XX columns do not match")
    try:
        radii = np.array([tag_radius(t) for t in cdf_tags])
    except ValueError as e:
        raise ValueError(f"{table.path}: {e}") from None

    def column(name, parse, dtype):
        return np.array([_field(table, i, name, parse, v) for i, v in enumerate(table.column(name))], dtype=dtype)

    n = len(table)
    cdf = np.empty((n, len(radii)))
    exp = np.empty((n, len(radii)))
    for k, tag in enumerate(cdf_tags):
        cdf[:, k] = column(f"exp_cdf_{tag}", float, np.float64)
        exp[:, k] = column(f"exp_{tag}", float, np.float64)
    time = column("time", parse_time, np.float64) if "time" in header else np.full(n, np.nan)
    ints = [column(name, int, np.int64) for name in ("idx", "label", "predict", "correct")]
    return ConfidenceLog(table.path, *ints, time, radii, cdf, exp)


# ---------------------------------------------------------------------------------------- Lee et al.
def read_threshold_file(path) -> dict:
    """Read an l0 thresholds file into ``{radius: Fraction}`` (sorted by radius).

    Formats: ours (header ``radius<TAB>threshold[<TAB>fraction]``; the exact fraction is returned when
    present, else the rounded-up decimal, exactly), and Lee et al.'s (header
    ``r<TAB>rho_r^{-1}(0.5)<TAB>err``, or bare ``r value`` lines; the decimal is returned exactly as
    written). Fields are tab-separated, or whitespace-separated on lines without a tab. Blank lines
    and ``#`` comments are skipped. Raises FileNotFoundError / ValueError.
    """
    table = read_table(path, "thresholds file", header=None, split="auto", comments=True, ragged=True)
    names = [c.lower() for c in table.header]
    frac_col = names.index("fraction") if "fraction" in names else None
    out: dict = {}
    for i, f in enumerate(table.rows):
        if len(f) < 2:
            raise table.error(i, f"expected 'radius threshold', got {' '.join(f)!r}")
        try:
            r = int(f[0])
            value = Fraction(f[1])
        except (ValueError, ZeroDivisionError):
            raise table.error(i, f"cannot read radius and threshold from {' '.join(f)!r}") from None
        if frac_col is not None:
            if len(f) <= frac_col:
                raise table.error(i, "missing the fraction column")
            try:
                exact = Fraction(f[frac_col])
            except (ValueError, ZeroDivisionError):
                raise table.error(i, f"bad fraction {f[frac_col]!r}") from None
            if not 0 <= value - exact < Fraction(1, 10 ** THRESHOLD_DECIMALS):
                raise table.error(i, f"decimal {f[1]} is not the fraction rounded up")
            value = exact
        if r < 0 or r in out:
            raise table.error(i, f"radius {r} is negative or repeated")
        if not 0 <= value <= 1:
            raise table.error(i, f"threshold {f[1]} is not in [0, 1]")
        out[r] = value
    if not out:
        raise ValueError(f"{table.path}: no thresholds in file")
    return dict(sorted(out.items()))


# ---------------------------------------------------------------------------------------- Jia et al.
def read_counts_file(path) -> tuple:
    """Read a per-class counts file in Jia et al.'s format: one row per test point, the C counts
    then the true label, whitespace separated; blank lines and lines starting with '#' skipped.
    Returns (counts (N, C) int64, labels (N,) int64)."""
    table = read_table(path, "counts file", header=False, split="whitespace", comments=True)
    width = len(table.rows[0])
    if width < 3:
        raise table.error(0, f"need at least 2 counts and a label, got {width} fields")
    rows = []
    for i, f in enumerate(table.rows):
        try:
            rows.append([int(v) for v in f])
        except ValueError:
            raise table.error(i, f"expected integers (counts then label), got {' '.join(f)[:60]!r}") from None
    data = np.asarray(rows, dtype=np.int64)
    counts, labels = data[:, :-1], data[:, -1]
    if np.any(counts < 0):
        raise ValueError(f"{table.path}: counts must be >= 0")
    if np.any(counts.sum(axis=1) < 1):
        raise ValueError(f"{table.path}: every row needs at least one sample")
    if np.any(labels < 0) or np.any(labels >= counts.shape[1]):
        raise ValueError(f"{table.path}: labels must be in [0, {counts.shape[1]})")
    return counts, labels
