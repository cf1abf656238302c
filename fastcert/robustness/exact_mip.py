"""Exact minimal adversarial perturbations of small ReLU networks by mixed-integer programming (HiGHS).

The network is an affine/ReLU chain ``[(W_1, b_1), ..., (W_L, b_L)]`` (see
:func:`fastcert.robustness.attacks.affine_relu_layers`, which walks IBP's op graph) on inputs in
[0, 1]^D. For a point x of class y the program

    minimize ||z - x||_p   over z in [0, 1]^D with ||z - x||_inf <= R,
    a_k = ReLU(W_k a_{k-1} + b_k)   (big-M with binary phase variables, bounds from interval arithmetic),
    f_j(z) >= f_y(z) for at least one j != y (one binary per class)

is solved to optimality. R is an upper bound on the answer (an attack's distance); it only tightens the
big-M constants (every l1/l2 ball of radius R lies in the linf ball of radius R). l1 and linf are MILPs.
l2 (a mixed-integer QP, which HiGHS does not solve) is solved by outer approximation: the squared norm is
the separable sum of q_i >= (z_i - x_i)^2, each q_i bounded below by tangent lines 2a(z_i - x_i) - a^2
(``n_tangents`` on a grid over the coordinate's range to start with). The MILP over these tangents gives a
proven lower bound on ||z - x||_2^2; its solution z is a real boundary point whose true norm is an upper
bound. The tangents at that solution's coordinates are then added (they make the relaxation exact there,
so the same point cannot come back with a smaller objective) and the MILP is solved again, with the best
point so far as incumbent, until the upper bound is within ``rel_gap`` of the lower bound (status
"optimal"), or time runs out (status "time_limit"; ``lower`` and ``distance`` then bracket the answer).
Being separable, each cut is one-dimensional: a 16-16 ReLU network on 8x8 digits converges in 4-20 s per
point. Requires ``highspy``.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch

from fastcert.ibp.reference import affine_interval


def _interval_bounds(layers, lo, hi, x, R, norm):
    """Pre-activation bounds of every layer over {z in [lo, hi], ||z - x||_p <= R} (float64, widened).

    Each layer is the reference interval step (:func:`fastcert.ibp.reference.affine_interval`, W+/W-)
    on the previous layer's ReLU box; the first layer's bounds are also intersected with what the
    l1/l2 ball allows (the box [lo, hi] only encloses that ball), and every bound is widened by a
    relative 1e-9 for the rounding of the float64 arithmetic (big-M constants must be sound)."""
    bounds = []
    l, u = torch.from_numpy(np.asarray(lo, dtype=np.float64)), torch.from_numpy(np.asarray(hi, dtype=np.float64))
    for k, (W, b) in enumerate(layers):
        Wt, bt = torch.from_numpy(np.asarray(W, dtype=np.float64)), torch.from_numpy(np.asarray(b, dtype=np.float64))
        pl, pu = (t.numpy() for t in affine_interval(l[None], u[None], Wt, bt))
        pl, pu = pl[0], pu[0]
        if k == 0 and norm in ("l1", "l2"):
            # the ball itself: W(z - x) is at most R * dual norm of each row
            q = np.abs(W).max(1) if norm == "l1" else np.sqrt((W * W).sum(1))
            c = W @ x + b
            pl, pu = np.maximum(pl, c - R * q), np.minimum(pu, c + R * q)
        pad = 1e-9 * (1.0 + np.abs(pl) + np.abs(pu))  # cover the rounding of the float64 arithmetic
        pl, pu = pl - pad, pu + pad
        bounds.append((pl, pu))
        l, u = torch.from_numpy(np.maximum(pl, 0)), torch.from_numpy(np.maximum(pu, 0))
    return bounds


def _as_solution(highspy, values):
    sol = highspy.HighsSolution()
    sol.col_value = list(map(float, values))
    sol.value_valid = True
    return sol


class _Program:
    """A mixed-integer program under construction: columns (bounds, cost, integrality) and row-wise
    sparse constraints lower <= sum coef * var <= upper."""

    def __init__(self, inf: float):
        self.inf = inf
        self.col_lo, self.col_hi, self.cost, self.integer = [], [], [], []
        self.start, self.index, self.value, self.lo, self.hi = [0], [], [], [], []

    def new_vars(self, n, lo, hi, c=0.0, integer=False) -> np.ndarray:
        s = len(self.col_lo)
        self.col_lo.extend(np.broadcast_to(lo, (n,)).tolist())
        self.col_hi.extend(np.broadcast_to(hi, (n,)).tolist())
        self.cost.extend(np.broadcast_to(c, (n,)).tolist())
        self.integer.extend([integer] * n)
        return np.arange(s, s + n)

    def add(self, idx, val, lo, hi):
        idx = np.asarray(idx, dtype=np.int64)
        val = np.asarray(val, dtype=np.float64)
        keep = val != 0
        self.index.extend(idx[keep].tolist())
        self.value.extend(val[keep].tolist())
        self.start.append(len(self.index))
        self.lo.append(lo)
        self.hi.append(hi)

    def highs(self, highspy, rel_gap: float):
        """A silent single-threaded HiGHS instance holding this program."""
        h = highspy.Highs()
        h.setOptionValue("output_flag", False)
        h.setOptionValue("mip_rel_gap", min(rel_gap, 1e-4))
        h.setOptionValue("threads", 1)
        lp = highspy.HighsLp()
        lp.num_col_ = len(self.col_lo)
        lp.num_row_ = len(self.lo)
        lp.col_cost_ = np.asarray(self.cost)
        lp.col_lower_ = np.asarray(self.col_lo)
        lp.col_upper_ = np.asarray(self.col_hi)
        lp.row_lower_ = np.asarray(self.lo, dtype=np.float64)
        lp.row_upper_ = np.asarray(self.hi, dtype=np.float64)
        lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
        lp.a_matrix_.start_ = np.asarray(self.start, dtype=np.int32)
        lp.a_matrix_.index_ = np.asarray(self.index, dtype=np.int32)
        lp.a_matrix_.value_ = np.asarray(self.value, dtype=np.float64)
        lp.integrality_ = [highspy.HighsVarType.kInteger if f else highspy.HighsVarType.kContinuous
                           for f in self.integer]
        h.passModel(lp)
        return h


def _encode_hidden(prog: _Program, layers, bounds, z):
    """a_k = ReLU(W_k a_{k-1} + b_k) for every hidden layer: stable neurons exactly (always-inactive ones
    dropped), unstable ones by big-M with a binary phase variable. Returns the last activations as
    ``(act_idx, act_const)``: variable index per neuron, -1 where the neuron is the constant act_const."""
    inf = prog.inf
    act_idx, act_const = z, np.zeros(z.size)
    for k in range(len(layers) - 1):
        W, b = layers[k]
        pl, pu = bounds[k]
        m = W.shape[0]
        new_idx = np.full(m, -1, dtype=np.int64)
        live = act_idx >= 0
        for i in range(m):
            if pu[i] <= 0:
                continue  # always inactive
            coef = W[i, live]
            cst = b[i] + W[i, ~live] @ act_const[~live]
            vars_ = act_idx[live]
            a = prog.new_vars(1, max(pl[i], 0.0), pu[i])[0]
            new_idx[i] = a
            if pl[i] >= 0:  # always active: a = W a_prev + b
                prog.add(np.r_[a, vars_], np.r_[1.0, -coef], cst, cst)
                continue
            dlt = prog.new_vars(1, 0.0, 1.0, integer=True)[0]
            prog.add(np.r_[a, vars_], np.r_[1.0, -coef], cst, inf)  # a >= pre
            prog.add([a, dlt], [1.0, -pu[i]], -inf, 0.0)  # a <= u * delta
            # a <= pre - l (1 - delta)  <=>  a - W a_prev - l delta <= b - l
            prog.add(np.r_[a, vars_, dlt], np.r_[1.0, -coef, -pl[i]], -inf, cst - pl[i])
        act_idx, act_const = new_idx, np.zeros(m)
    return act_idx, act_const


def _encode_disjunction(prog: _Program, layers, bounds, act_idx, act_const, lo, hi, y) -> dict:
    """f_j >= f_y for at least one j != y: one binary e_j per class that can win somewhere in the domain
    (big-M from the reference interval bounds of f_j - f_y), and sum e_j >= 1. Returns {j: e_j} (empty
    when no class can win: the program is infeasible)."""
    inf = prog.inf
    W, b = (np.asarray(t, dtype=np.float64) for t in layers[-1])
    live = act_idx >= 0
    # bounds of f_j - f_y over the domain, for the disjunction's big-M
    pl_prev = np.maximum(bounds[-2][0], 0) if len(layers) > 1 else lo
    pu_prev = np.maximum(bounds[-2][1], 0) if len(layers) > 1 else hi
    wdiff, bdiff = W - W[y], b - b[y]
    low_all, up_all = (t[0].numpy() for t in affine_interval(
        torch.from_numpy(np.asarray(pl_prev, dtype=np.float64))[None],
        torch.from_numpy(np.asarray(pu_prev, dtype=np.float64))[None],
        torch.from_numpy(wdiff), torch.from_numpy(bdiff)))
    e_vars = {}
    for j in range(W.shape[0]):
        if j == y:
            continue
        up, low = float(up_all[j]), float(low_all[j])
        if up < -1e-9 * (1 + abs(up)):
            continue  # class j cannot win anywhere in the domain
        M = max(0.0, -low) * (1 + 1e-7) + 1e-7
        e = prog.new_vars(1, 0.0, 1.0, integer=True)[0]
        e_vars[j] = e
        wd = wdiff[j]
        cst = bdiff[j] + wd[~live] @ act_const[~live]
        # wd . a + cst >= -M (1 - e)  <=>  wd . a - M e >= -cst - M
        prog.add(np.r_[act_idx[live], e], np.r_[wd[live], -M], -cst - M, inf)
    if e_vars:
        sel = list(e_vars.values())
        prog.add(sel, np.ones(len(sel)), 1.0, inf)
    return e_vars


def _encode_norm(prog: _Program, norm, z, x, lo, hi, R, upper, n_tangents):
    """The objective ||z - x||_p (linear for l1 and linf; for l2 the squared norm under tangent cuts).
    Returns the l2 columns q (q_i >= (z_i - x_i)^2), None for the other norms."""
    inf, D = prog.inf, x.size
    if norm == "linf":
        t = prog.new_vars(1, 0.0, R, c=1.0)[0]
        for i in range(D):
            prog.add([z[i], t], [1.0, -1.0], -inf, x[i])
            prog.add([z[i], t], [1.0, 1.0], x[i], inf)
        return None
    if norm == "l1":
        s = prog.new_vars(D, 0.0, np.maximum(hi - x, x - lo), c=1.0)
        for i in range(D):
            prog.add([z[i], s[i]], [1.0, -1.0], -inf, x[i])
            prog.add([z[i], s[i]], [1.0, 1.0], x[i], inf)
        prog.add(s, np.ones(D), -inf, R * D if upper is None else R)
        return None
    # squared l2 as a sum of separable terms q_i >= (z_i - x_i)^2, each under-estimated by its tangents
    # q_i >= 2 a (z_i - x_i) - a^2 (a on a grid over the coordinate's range; more added at every
    # solution). The MIP optimum is then a proven lower bound on ||z - x||_2^2.
    dlo, dhi = lo - x, hi - x
    q = prog.new_vars(D, 0.0, np.maximum(dhi * dhi, dlo * dlo), c=1.0)
    if upper is not None:
        prog.add(q, np.ones(D), -inf, R * R)
    for i in range(D):
        for a in np.linspace(dlo[i], dhi[i], n_tangents):
            if a != 0.0:  # a = 0 is q_i >= 0, already a column bound
                prog.add([q[i], z[i]], [1.0, -2.0 * a], -a * a - 2.0 * a * x[i], inf)
    return q


class _Solver:
    """Runs HiGHS on ``h`` within what is left of ``time_limit`` seconds since construction."""

    def __init__(self, highspy, h, time_limit: float):
        self.highspy, self.h, self.time_limit = highspy, h, float(time_limit)
        self.t_start = time.perf_counter()

    def out_of_time(self) -> bool:
        return time.perf_counter() - self.t_start > self.time_limit

    def solve(self):
        """(status, solution or None, proven lower bound on the objective)."""
        hs, h = self.highspy, self.h
        h.setOptionValue("time_limit", max(1e-3, self.time_limit - (time.perf_counter() - self.t_start)))
        h.run()
        st = h.getModelStatus()
        if st == hs.HighsModelStatus.kInfeasible:
            return "infeasible", None, float("inf")
        info = h.getInfo()
        sol = np.asarray(h.getSolution().col_value)
        status = "optimal" if st == hs.HighsModelStatus.kOptimal else "time_limit"
        if sol.size == 0 or info.primal_solution_status == 0:
            return status, None, float(info.mip_dual_bound)
        return status, sol, float(info.mip_dual_bound)


def _outer_approximation(solver: _Solver, x, z, q, sol, state: dict, target_of, rel_gap, max_cuts):
    """l2: add the tangents at the solution's coordinates and solve again until the best adversarial
    point's norm meets the proven lower bound (within rel_gap). ``state`` holds best, best_z, target,
    lower and status, updated in place."""
    hs, h, inf = solver.highspy, solver.h, solver.highspy.kHighsInf
    for _ in range(max_cuts):
        if state["best"] <= state["lower"] * (1 + rel_gap) + 1e-12 or state["status"] != "optimal":
            break
        if solver.out_of_time():
            state["status"] = "time_limit"
            break
        d = sol[z] - x
        gap = d * d - sol[q]
        added = 0
        for i in np.flatnonzero(gap > 1e-12 * (1.0 + d * d)):
            a = float(d[i])
            h.addRow(-a * a - 2.0 * a * x[i], inf, 2, np.array([q[i], z[i]], dtype=np.int32),
                     np.array([1.0, -2.0 * a]))
            added += 1
        if added == 0:  # exact at its own optimum: the gap left is HiGHS' mip_rel_gap (< rel_gap)
            break
        # the best point so far, with q at its true squares, is feasible: hand it over as incumbent
        inc = sol.copy()
        inc[z] = state["best_z"]
        inc[q] = (state["best_z"] - x) ** 2
        try:
            h.setSolution(_as_solution(hs, inc))
        except AttributeError:  # an older highspy without setSolution: the solve is merely slower
            pass
        state["status"], sol, lb = solver.solve()
        if sol is None:
            break
        state["lower"] = max(state["lower"], math.sqrt(max(lb, 0.0)))
        cand = float(np.linalg.norm(sol[z] - x))
        if cand < state["best"]:
            state["best"], state["best_z"], state["target"] = cand, sol[z].copy(), target_of(sol)
    state["lower"] = min(state["lower"], state["best"])


def mip_min_perturbation(layers, x, y, norm, upper=None, time_limit=60.0, rel_gap=1e-4, max_cuts=200,
                         n_tangents=17):
    """Exact minimal perturbation of one point. layers: list of (W, b) numpy float64; x: (D,) in [0, 1].

    Returns a dict: ``distance`` (the optimum; +inf if no adversarial point exists within ``upper``),
    ``lower`` (a proven lower bound), ``x_adv`` (the optimal point, on the decision boundary: f_j = f_y
    is allowed), ``status`` ("optimal", "infeasible", "time_limit"), ``target``.
    """
    import highspy

    x = np.asarray(x, dtype=np.float64).ravel()
    R = float(upper) * (1 + 1e-6) + 1e-9 if upper is not None and math.isfinite(upper) else 1.0
    lo, hi = np.maximum(0.0, x - R), np.minimum(1.0, x + R)
    bounds = _interval_bounds(layers, lo, hi, x, R, norm)
    prog = _Program(highspy.kHighsInf)
    z = prog.new_vars(x.size, lo, hi)
    act_idx, act_const = _encode_hidden(prog, layers, bounds, z)
    e_vars = _encode_disjunction(prog, layers, bounds, act_idx, act_const, lo, hi, y)
    if not e_vars:
        return {"distance": float("inf"), "lower": float("inf"), "x_adv": None, "status": "infeasible", "target": -1}
    q = _encode_norm(prog, norm, z, x, lo, hi, R, upper, n_tangents)
    solver = _Solver(highspy, prog.highs(highspy, rel_gap), time_limit)

    status, sol, lower = solver.solve()
    if norm == "l2":  # the objective is the squared norm
        lower = math.sqrt(max(lower, 0.0)) if math.isfinite(lower) else lower
    if sol is None:
        return {"distance": float("inf") if status == "infeasible" else float("nan"), "lower": lower,
                "x_adv": None, "status": status, "target": -1}

    def target_of(sol_):
        return next((j for j, e in e_vars.items() if sol_[e] > 0.5), -1)

    order = {"l1": 1, "l2": 2, "linf": np.inf}[norm]
    state = {"best_z": sol[z].copy(), "target": target_of(sol), "lower": lower, "status": status}
    state["best"] = float(np.linalg.norm(state["best_z"] - x, order))
    if norm == "l2":
        _outer_approximation(solver, x, z, q, sol, state, target_of, rel_gap, max_cuts)
    return {"distance": state["best"], "lower": float(state["lower"]), "x_adv": np.clip(state["best_z"], 0.0, 1.0),
            "status": state["status"], "target": state["target"]}
