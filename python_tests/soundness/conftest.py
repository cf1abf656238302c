"""Shared pieces of the statistical soundness suite.

Every test here repeats a certification ``trials`` times (fixed seeds) on a base classifier whose
smoothed behaviour is known exactly, counts the certificates that claim more than the truth
("wrong"), and decides with a one-sided binomial test:

    accept  iff  wrong <= c,   c = the smallest count with P(Binom(trials, a_ref) > c) <= 1%,

where ``a_ref`` is the failure probability the procedure promises on the case (alpha, unless a test
says otherwise and why). A procedure that keeps its promise therefore passes with probability
>= 99%. Each case also runs as ``variant="control"``: the same procedure with exactly ONE thing
changed so that it is mildly unsound (its level 2-5 alpha, or one correction dropped; monkeypatched
into the module under test), which must then FAIL the same test (wrong > c). Each case's trial count
is sized (``power``) so that full mode detects its control with probability >= 90% given the
control's true failure rate ``a_ctrl`` at the case's boundary (computed exactly where the test says
so, else by a recorded simulation); SOUNDNESS.md lists the numbers.

Modes: ``mode="fast"`` (default, CI, a smoke version with fewer trials) and ``mode="full"`` (marked
slow: ``pytest -m slow python_tests/soundness``). The observed rates are printed in the terminal
summary (see SOUNDNESS.md). The seeds are fixed, so a run is deterministic.
"""
from __future__ import annotations

import math

import pytest
from scipy.stats import binom

_RESULTS: list = []

P_FALSE_ALARM = 0.01  # largest probability that a procedure keeping its promise fails a case
MIN_POWER = 0.90  # smallest probability (full mode) that a case detects its control


def tolerance(alpha: float, trials: int) -> float:
    """The suite's earlier rule (alpha plus a one-sided three-sigma allowance), kept for reference;
    the decision now uses :func:`accept_limit`."""
    return alpha + 3.0 * math.sqrt(alpha * (1.0 - alpha) / trials)


def accept_limit(trials: int, a_ref: float, p_false: float = P_FALSE_ALARM) -> int:
    """Smallest c with P(Binom(trials, a_ref) > c) <= p_false: accept iff wrong <= c."""
    c = int(binom.ppf(1.0 - p_false, trials, a_ref))
    while binom.sf(c, trials, a_ref) > p_false:  # guard against ppf rounding
        c += 1
    while c > 0 and binom.sf(c - 1, trials, a_ref) <= p_false:
        c -= 1
    return c


def pass_probability(trials: int, a_ref: float, c: int) -> float:
    """P(wrong <= c) for a procedure failing with probability exactly a_ref (>= 1 - p_false)."""
    return float(binom.cdf(c, trials, a_ref))


def power(trials: int, a_ref: float, a_ctrl: float) -> float:
    """P(wrong > c) for the control, whose true failure probability is a_ctrl."""
    return float(binom.sf(accept_limit(trials, a_ref), trials, a_ctrl))


def sizing(trials: int, a_ref: float, a_ctrl: float) -> dict:
    """The power calculation of one case (the numbers SOUNDNESS.md lists)."""
    c = accept_limit(trials, a_ref)
    return {"trials": trials, "a_ref": a_ref, "c": c, "pass": pass_probability(trials, a_ref, c),
            "a_ctrl": a_ctrl, "power": float(binom.sf(c, trials, a_ctrl))}


@pytest.fixture
def decision():
    """The decision rule and its power calculation, for the tests that check their own sizing."""
    import types

    return types.SimpleNamespace(accept_limit=accept_limit, pass_probability=pass_probability, power=power,
                                 sizing=sizing, P_FALSE_ALARM=P_FALSE_ALARM, MIN_POWER=MIN_POWER)


@pytest.fixture(params=["fast", pytest.param("full", marks=pytest.mark.slow)])
def mode(request):
    return request.param


@pytest.fixture(params=["sound", "control"])
def variant(request):
    return request.param


@pytest.fixture
def judge(request):
    """judge(wrong, trials, a_ref, variant, **info): accept iff wrong <= accept_limit(trials, a_ref)
    for the real procedure, and require wrong > that limit for the control; records the numbers
    for the summary."""

    def _judge(wrong: int, trials: int, a_ref: float, variant: str = "sound", **info):
        wrong = int(wrong)
        c = accept_limit(trials, a_ref)
        rate = wrong / trials
        name = request.node.nodeid.split("::", 1)[-1] + (f" {info['bound']}" if "bound" in info else "")
        _RESULTS.append((name, variant, trials, wrong, rate, a_ref, c))
        if variant == "sound":
            assert wrong <= c, f"{wrong}/{trials} wrong certificates > limit {c} (a_ref={a_ref}) {info}"
        else:
            assert wrong > c, (f"mildly unsound control only {wrong}/{trials} wrong (<= limit {c}, "
                               f"a_ref={a_ref}): this case cannot detect it {info}")
        return rate

    return _judge


def pytest_terminal_summary(terminalreporter):
    if not _RESULTS:
        return
    tr = terminalreporter
    tr.section("soundness: violation rates")
    tr.write_line(f"{'test':<66} {'variant':<8} {'trials':>7} {'wrong':>6} {'rate':>7} {'a_ref':>7} {'limit':>6}")
    for name, var, trials, wrong, rate, a_ref, c in _RESULTS:
        tr.write_line(f"{name[:66]:<66} {var:<8} {trials:>7} {wrong:>6} {rate:>7.4f} {a_ref:>7.4f} {c:>6}")
