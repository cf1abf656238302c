"""Shared pieces of the statistical soundness suite.

Every test here repeats a certification many times on a base classifier whose smoothed behaviour is
known exactly, counts the certificates that claim more than the truth ("wrong"), and requires

    wrong / trials <= alpha + 3 * sqrt(alpha * (1 - alpha) / trials)

(one-sided binomial tolerance; the seeds are fixed, so a run is deterministic). The cases sit at the
boundary where the bound is nearly tight, and each test is parametrized with ``variant="unsound"``:
the same procedure with its confidence bound replaced by the point estimate (monkeypatched into the
module under test), which must then FAIL the same check. That shows every check can fail.

Modes: ``mode="fast"`` (default, CI) and ``mode="full"`` (marked slow: ``pytest -m slow
python_tests/soundness``). The observed rates are printed in the terminal summary (see SOUNDNESS.md).
"""
from __future__ import annotations

import math

import pytest

_RESULTS: list = []


def tolerance(alpha: float, trials: int) -> float:
    """Largest violation rate accepted for nominal failure probability alpha after ``trials`` runs."""
    return alpha + 3.0 * math.sqrt(alpha * (1.0 - alpha) / trials)


@pytest.fixture(params=["fast", pytest.param("full", marks=pytest.mark.slow)])
def mode(request):
    return request.param


@pytest.fixture(params=["sound", "unsound"])
def variant(request):
    return request.param


@pytest.fixture
def judge(request):
    """judge(wrong, trials, alpha, variant, **info): assert the violation rate is within tolerance for
    the real procedure and beyond it for the unsound control; records the numbers for the summary."""

    def _judge(wrong: int, trials: int, alpha: float, variant: str = "sound", **info):
        rate = wrong / trials
        tol = tolerance(alpha, trials)
        _RESULTS.append((request.node.nodeid.split("::", 1)[-1], variant, trials, wrong, rate, alpha, tol))
        if variant == "sound":
            assert rate <= tol, f"{wrong}/{trials} = {rate:.4f} wrong certificates > {tol:.4f} (alpha={alpha}) {info}"
        else:
            assert rate > tol, (f"unsound control only {wrong}/{trials} = {rate:.4f} wrong (<= {tol:.4f}): "
                                f"this case cannot detect an unsound bound {info}")
        return rate

    return _judge


def pytest_terminal_summary(terminalreporter):
    if not _RESULTS:
        return
    tr = terminalreporter
    tr.section("soundness: violation rates")
    tr.write_line(f"{'test':<62} {'variant':<8} {'trials':>7} {'wrong':>6} {'rate':>7} {'alpha':>6} {'limit':>7}")
    for name, var, trials, wrong, rate, alpha, tol in _RESULTS:
        tr.write_line(f"{name[:62]:<62} {var:<8} {trials:>7} {wrong:>6} {rate:>7.4f} {alpha:>6.3f} {tol:>7.4f}")
