"""fastcert.io.readers: the one text-table primitive and the reader of each published format (ours and
Cohen et al.'s logs, Kumar et al.'s confidence logs, Lee et al.'s thresholds, Jia et al.'s counts),
and the resume path of LogWriter, which reads its own log through the same primitive."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from testing import shared_data

from fastcert.io.logs import LogWriter, format_time, radius_tag
from fastcert.io.readers import (parse_time, read_counts_file, read_kumar_log, read_log, read_table,
                                 read_threshold_file, tag_radius)


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


# ------------------------------------------------------------------------------------- the primitive
def test_table_header_rows_and_file_lines(tmp_path):
    p = write(tmp_path, "t.tsv", "a\tb\n\n1\t2\n# not a comment here\n")
    with pytest.raises(ValueError, match=r"t\.tsv: line 4 has 1 fields, the header has 2"):
        read_table(p)
    t = read_table(p, comments=True)
    assert t.header == ["a", "b"] and t.rows == [["1", "2"]] and t.lines == [3] and len(t) == 1
    assert t.column("b") == ["2"] and t.columns() == {"a": ["1"], "b": ["2"]}
    with pytest.raises(ValueError, match="no.*'c'|'c' column"):
        t.column("c")
    assert str(t.error(0, "bad")) == f"{p}: line 3: bad"


def test_table_split_modes_and_header_detection(tmp_path):
    p = write(tmp_path, "w.txt", "r   value err\n0\t0.5\tNA x\n1 0.75 NA\n")
    t = read_table(p, header=None, split="auto")
    assert t.header == ["r", "value", "err"] and t.rows == [["0", "0.5", "NA x"], ["1", "0.75", "NA"]]
    t = read_table(write(tmp_path, "n.txt", "0 1 2\n3 4 5\n"), header=None, split="whitespace")
    assert t.header == [] and t.rows == [["0", "1", "2"], ["3", "4", "5"]]
    with pytest.raises(ValueError, match="line 2 has 2 fields, the first row has 3"):
        read_table(write(tmp_path, "r.txt", "0 1 2\n3 4\n"), header=False, split="whitespace")
    assert read_table(tmp_path / "r.txt", header=False, split="whitespace", ragged=True).rows[1] == ["3", "4"]


def test_table_missing_empty_binary(tmp_path):
    with pytest.raises(FileNotFoundError, match="counts file not found"):
        read_table(tmp_path / "none.txt", "counts file")
    with pytest.raises(FileNotFoundError):
        read_table(tmp_path)  # a directory
    with pytest.raises(ValueError, match="empty log"):
        read_table(write(tmp_path, "e.tsv", "\n  \n"), "log")
    b = tmp_path / "b.bin"
    b.write_bytes(b"\x00\x01\x02idx\n")
    with pytest.raises(ValueError, match="binary"):
        read_table(b, "log")


def test_field_parsers_round_trip():
    for s in (0.0, 1.5, 3725.25):
        assert parse_time(format_time(s)) == pytest.approx(s)
    assert parse_time("12.5") == 12.5
    with pytest.raises(ValueError):
        parse_time("1:2")
    for r in (0.0, 0.25, 1.0, 1.5, 0.125, 2.0):
        assert tag_radius(radius_tag(r)) == pytest.approx(r)
    with pytest.raises(ValueError, match="tag"):
        tag_radius("1.5")


# ------------------------------------------------------------------------------------- ours and Cohen et al.'s
def test_read_log_typed_and_raw(tmp_path):
    p = write(tmp_path, "ours.tsv", "idx\tlabel\tpredict\tradius\tcorrect\ttime\tp_lower\tnote\n"
                                    "0\t3\t3\t0.5\t1\t0:00:01.500000\t0.96875000\tx\n"
                                    "1\t2\t-1\t0.0\t0\t2.25\t0.1\ty\n")
    log = read_log(p)
    assert log["_n"] == 2 and log["_path"] == str(p)
    assert log["idx"].dtype == np.int64 and log["predict"].tolist() == [3, -1]
    assert log["radius"].dtype == np.float64 and log["time"].tolist() == [1.5, 2.25]
    assert log["note"].tolist() == ["x", "y"]
    raw = read_log(p, raw=True)
    assert raw["p_lower"] == ["0.96875000", "0.1"] and raw["time"][0] == "0:00:01.500000"
    assert Fraction(raw["p_lower"][0]) == Fraction(31, 32)
    bad = write(tmp_path, "bad.tsv", "idx\ttime\n0\t1.0\n1\tsoon\n")
    with pytest.raises(ValueError, match=r"bad\.tsv: line 3: column 'time'"):
        read_log(bad)
    with pytest.raises(ValueError, match="header"):
        read_log(write(tmp_path, "one.tsv", "idx\n0\n"))


def test_read_cohen_published_log():
    path = shared_data("cohen_certify_cifar10_resnet110_noise_0.25_test_sigma_0.25")
    log = read_log(path)
    assert log["_n"] == 500
    assert set(np.unique(log["correct"])) <= {0, 1} and np.all(log["time"] > 0)
    np.testing.assert_array_equal(log["correct"] == 1, (log["predict"] == log["label"]) & (log["predict"] != -1))


# ------------------------------------------------------------------------------------- Kumar et al.'s
def test_read_kumar_log_names_the_line(tmp_path):
    p = write(tmp_path, "k.tsv", "idx\tlabel\tpredict\texp_cdf_00\texp_cdf_50\texp_00\texp_50\tcorrect\n"
                                 "0\t1\t1\t0.9\t0.5\t0.8\t0.4\t1\n"
                                 "1\t1\t1\t0.9\tabc\t0.8\t0.4\t1\n")
    with pytest.raises(ValueError, match=r"line 3: column 'exp_cdf_50'"):
        read_kumar_log(p)
    p.write_text(p.read_text().replace("abc", "0.45"))
    log = read_kumar_log(p)
    assert log.radii.tolist() == [0.0, 0.5] and log.cdf.tolist() == [[0.9, 0.5], [0.9, 0.45]]
    assert np.all(np.isnan(log.time)) and len(log) == 2


# ------------------------------------------------------------------------------------- Lee et al.'s thresholds
def test_read_threshold_file_errors_name_the_file_line(tmp_path):
    p = write(tmp_path, "t.txt", "0 0.5\n\n0 0.6\n")
    with pytest.raises(ValueError, match=r"t\.txt: line 3: radius 0 is negative or repeated"):
        read_threshold_file(p)
    p = write(tmp_path, "t2.txt", "radius\tthreshold\n0\t0.5\n1\n")
    with pytest.raises(ValueError, match="line 3: expected 'radius threshold'"):
        read_threshold_file(p)
    assert read_threshold_file(write(tmp_path, "ok.txt", "0\t0.5\n1\t0.875\n")) == {0: Fraction(1, 2),
                                                                                   1: Fraction(7, 8)}


# ------------------------------------------------------------------------------------- Jia et al.'s counts
def test_read_counts_file(tmp_path):
    counts, labels = read_counts_file(write(tmp_path, "c.txt", "3 1 0 0\n\n# x\n0 2 2 1\n"))
    assert counts.tolist() == [[3, 1, 0], [0, 2, 2]] and labels.tolist() == [0, 1]
    with pytest.raises(ValueError, match=r"c2\.txt: line 2: expected integers"):
        read_counts_file(write(tmp_path, "c2.txt", "3 1 0 0\n1 a 0 0\n"))
    with pytest.raises(ValueError, match="at least 2 counts"):
        read_counts_file(write(tmp_path, "c3.txt", "3 0\n"))
    with pytest.raises(ValueError, match="at least one sample"):
        read_counts_file(write(tmp_path, "c4.txt", "0 0 1\n"))


def test_read_jia_published_counts():
    counts, labels = read_counts_file(shared_data("jia_topk_counts_cifar10_sigma0.25.txt"))
    assert counts.shape[1] == 10 and counts.shape[0] == labels.shape[0] > 0
    assert np.all(counts.sum(axis=1) == counts.sum(axis=1)[0])  # every row: the same n


# ------------------------------------------------------------------------------------- resume
def test_log_writer_resume_reads_through_the_primitive(tmp_path):
    cols = ["idx", "label", "predict", "radius", "correct", "time"]
    p = tmp_path / "log.tsv"
    with LogWriter(p, cols) as w:
        w.write_many([{"idx": i, "label": 0, "predict": 0, "radius": 0.5, "correct": 1, "time": "0.1"}
                      for i in range(3)])
    with LogWriter(p, cols) as w:
        assert w.done == {0, 1, 2}
    p.write_text(p.read_text() + "\n3\t0\t0\n")
    with pytest.raises(ValueError, match=r"^out: .*log\.tsv: line 6: not a row of this log"):
        LogWriter(p, cols)
    p.write_text("idx\tlabel\n0\t1\n")
    with pytest.raises(ValueError, match="out: .* has columns"):
        LogWriter(p, cols)
