"""Exact minimal adversarial perturbations of small ReLU networks by mixed-integer programming (HiGHS).

The network is an affine/ReLU chain ``[(W_1, b_1), ..., (W_L, b_L)]`` (see
:func:`fastcert.robustness.attacks.affine_relu_layers`) on inputs in [0, 1]^D. For a point x of class y the program

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


def _interval_bounds(layers, lo, hi, x, R, norm):
    """Pre-activation bounds of every layer over {z in [lo, hi], ||z - x||_p <= R} (float64, widened)."""
    bounds = []
    l, u = lo, hi
    for k, (W, b) in enumerate(layers):
        Wp, Wn = np.maximum(W, 0), np.minimum(W, 0)
        pl = Wp @ l + Wn @ u + b
        pu = Wp @ u + Wn @ l + b
        if k == 0 and norm in ("l1", "l2"):
            # the ball itself: W(z - x) is at most R * dual norm of each row
            q = np.abs(W).max(1) if norm == "l1" else np.sqrt((W * W).sum(1))
            c = W @ x + b
            pl, pu = np.maximum(pl, c - R * q), np.minimum(pu, c + R * q)
        pad = 1e-9 * (1.0 + np.abs(pl) + np.abs(pu))  # cover the rounding of the float64 arithmetic
        pl, pu = pl - pad, pu + pad
        bounds.append((pl, pu))
        l, u = np.maximum(pl, 0), np.maximum(pu, 0)
    return bounds


def _as_solution(highspy, values):
    sol = highspy.HighsSolution()
    sol.col_value = list(map(float, values))
    sol.value_valid = True
    return sol


class _Rows:
    """Row-wise sparse constraint builder: lower <= sum coef * var <= upper."""

    def __init__(self):
        self.start, self.index, self.value, self.lo, self.hi = [0], [], [], [], []

    def add(self, idx, val, lo, hi):
        idx = np.asarray(idx, dtype=np.int64)
        val = np.asarray(val, dtype=np.float64)
        keep = val != 0
        self.index.extend(idx[keep].tolist())
        self.value.extend(val[keep].tolist())
        self.start.append(len(self.index))
        self.lo.append(lo)
        self.hi.append(hi)


def mip_min_perturbation(layers, x, y, norm, upper=None, time_limit=60.0, rel_gap=1e-4, max_cuts=200,
                         n_tangents=17):
    """Exact minimal perturbation of one point. layers: list of (W, b) numpy float64; x: (D,) in [0, 1].

    Returns a dict: ``distance`` (the optimum; +inf if no adversarial point exists within ``upper``),
    ``lower`` (a proven lower bound), ``x_adv`` (the optimal point, on the decision boundary: f_j = f_y
    is allowed), ``status`` ("optimal", "infeasible", "time_limit"), ``target``.
    """
    import highspy

    inf = highspy.kHighsInf
    x = np.asarray(x, dtype=np.float64).ravel()
    D = x.size
    R = float(upper) * (1 + 1e-6) + 1e-9 if upper is not None and math.isfinite(upper) else 1.0
    lo, hi = np.maximum(0.0, x - R), np.minimum(1.0, x + R)
    bounds = _interval_bounds(layers, lo, hi, x, R, norm)
    n_layers = len(layers)
    cols_lo, cols_hi, cost, integ = [], [], [], []

    def new_vars(n, lo_, hi_, c=0.0, integer=False):
        s = len(cols_lo)
        cols_lo.extend(np.broadcast_to(lo_, (n,)).tolist())
        cols_hi.extend(np.broadcast_to(hi_, (n,)).tolist())
        cost.extend(np.broadcast_to(c, (n,)).tolist())
        integ.extend([integer] * n)
        return np.arange(s, s + n)

    rows = _Rows()
    z = new_vars(D, lo, hi)
    # activations: each entry is (const, {var: coef}) expressed as a dense affine map in the variables
    # of the previous layer; we keep the current activation as (index array or None, constant array).
    act_idx, act_const = z, np.zeros(D)  # activation value = var (where idx >= 0) else const
    for k in range(n_layers - 1):
        W, b = layers[k]
        pl, pu = bounds[k]
        m = W.shape[0]
        new_idx = np.full(m, -1, dtype=np.int64)
        new_const = np.zeros(m)
        live = act_idx >= 0
        for i in range(m):
            if pu[i] <= 0:
                continue  # always inactive
            coef = W[i, live]
            cst = b[i] + W[i, ~live] @ act_const[~live]
            vars_ = act_idx[live]
            a = new_vars(1, max(pl[i], 0.0), pu[i])[0]
            new_idx[i] = a
            if pl[i] >= 0:  # always active: a = W a_prev + b
                rows.add(np.r_[a, vars_], np.r_[1.0, -coef], cst, cst)
                continue
            dlt = new_vars(1, 0.0, 1.0, integer=True)[0]
            rows.add(np.r_[a, vars_], np.r_[1.0, -coef], cst, inf)  # a >= pre
            rows.add([a, dlt], [1.0, -pu[i]], -inf, 0.0)  # a <= u * delta
            # a <= pre - l (1 - delta)  <=>  a - W a_prev - l delta <= b - l
            rows.add(np.r_[a, vars_, dlt], np.r_[1.0, -coef, -pl[i]], -inf, cst - pl[i])
        act_idx, act_const = new_idx, new_const
    W, b = layers[-1]
    live = act_idx >= 0
    C = W.shape[0]
    # bounds of f_j - f_y over the domain, for the disjunction's big-M
    pl_prev = np.maximum(bounds[-2][0], 0) if n_layers > 1 else lo
    pu_prev = np.maximum(bounds[-2][1], 0) if n_layers > 1 else hi
    sel = []
    e_vars = {}
    for j in range(C):
        if j == y:
            continue
        wd = W[j] - W[y]
        bd = b[j] - b[y]
        up = np.maximum(wd, 0) @ pu_prev + np.minimum(wd, 0) @ pl_prev + bd
        low = np.maximum(wd, 0) @ pl_prev + np.minimum(wd, 0) @ pu_prev + bd
        if up < -1e-9 * (1 + abs(up)):
            continue  # class j cannot win anywhere in the domain
        M = max(0.0, -low) * (1 + 1e-7) + 1e-7
        e = new_vars(1, 0.0, 1.0, integer=True)[0]
        e_vars[j] = e
        cst = bd + wd[~live] @ act_const[~live]
        # wd . a + cst >= -M (1 - e)  <=>  wd . a - M e >= -cst - M
        rows.add(np.r_[act_idx[live], e], np.r_[wd[live], -M], -cst - M, inf)
        sel.append(e)
    if not sel:
        return {"distance": float("inf"), "lower": float("inf"), "x_adv": None, "status": "infeasible", "target": -1}
    rows.add(sel, np.ones(len(sel)), 1.0, inf)
    # norm objective
    if norm == "linf":
        t = new_vars(1, 0.0, R, c=1.0)[0]
        for i in range(D):
            rows.add([z[i], t], [1.0, -1.0], -inf, x[i])
            rows.add([z[i], t], [1.0, 1.0], x[i], inf)
    elif norm == "l1":
        s = new_vars(D, 0.0, np.maximum(hi - x, x - lo), c=1.0)
        for i in range(D):
            rows.add([z[i], s[i]], [1.0, -1.0], -inf, x[i])
            rows.add([z[i], s[i]], [1.0, 1.0], x[i], inf)
        rows.add(s, np.ones(D), -inf, R * D if upper is None else R)
    else:
        # squared l2 as a sum of separable terms q_i >= (z_i - x_i)^2, each under-estimated by its tangents
        # q_i >= 2 a (z_i - x_i) - a^2 (a on a grid over the coordinate's range; more added at every
        # solution). The MIP optimum is then a proven lower bound on ||z - x||_2^2.
        dlo, dhi = lo - x, hi - x
        q = new_vars(D, 0.0, np.maximum(dhi * dhi, dlo * dlo), c=1.0)
        if upper is not None:
            rows.add(q, np.ones(D), -inf, R * R)
        for i in range(D):
            for a in np.linspace(dlo[i], dhi[i], n_tangents):
                if a != 0.0:  # a = 0 is q_i >= 0, already a column bound
                    rows.add([q[i], z[i]], [1.0, -2.0 * a], -a * a - 2.0 * a * x[i], inf)

    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("mip_rel_gap", min(rel_gap, 1e-4))
    h.setOptionValue("threads", 1)
    lp = highspy.HighsLp()
    lp.num_col_ = len(cols_lo)
    lp.num_row_ = len(rows.lo)
    lp.col_cost_ = np.asarray(cost)
    lp.col_lower_ = np.asarray(cols_lo)
    lp.col_upper_ = np.asarray(cols_hi)
    lp.row_lower_ = np.asarray(rows.lo, dtype=np.float64)
    lp.row_upper_ = np.asarray(rows.hi, dtype=np.float64)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
    lp.a_matrix_.start_ = np.asarray(rows.start, dtype=np.int32)
    lp.a_matrix_.index_ = np.asarray(rows.index, dtype=np.int32)
    lp.a_matrix_.value_ = np.asarray(rows.value, dtype=np.float64)
    lp.integrality_ = [highspy.HighsVarType.kInteger if f else highspy.HighsVarType.kContinuous for f in integ]
    h.passModel(lp)

    t_start = time.perf_counter()

    def solve():
        h.setOptionValue("time_limit", max(1e-3, float(time_limit) - (time.perf_counter() - t_start)))
        h.run()
        st = h.getModelStatus()
        if st == highspy.HighsModelStatus.kInfeasible:
            return "infeasible", None, float("inf")
        info = h.getInfo()
        sol = np.asarray(h.getSolution().col_value)
        status = "optimal" if st == highspy.HighsModelStatus.kOptimal else "time_limit"
        if sol.size == 0 or info.primal_solution_status == 0:
            return status, None, float(info.mip_dual_bound)
        return status, sol, float(info.mip_dual_bound)

    order = {"l1": 1, "l2": 2, "linf": np.inf}[norm]
    status, sol, lower = solve()
    if norm == "l2":  # the objective is the squared norm
        lower = math.sqrt(max(lower, 0.0)) if math.isfinite(lower) else lower
    if sol is None:
        return {"distance": float("inf") if status == "infeasible" else float("nan"), "lower": lower,
                "x_adv": None, "status": status, "target": -1}
    def target_of(sol_):
        return next((j for j, e in e_vars.items() if sol_[e] > 0.5), -1)

    best_z = sol[z].copy()
    best = float(np.linalg.norm(best_z - x, order))
    target = target_of(sol)
    if norm == "l2":
        # outer approximation: add the tangents at the solution's coordinates until the best adversarial
        # point's norm meets the proven lower bound (within rel_gap)
        for _ in range(max_cuts):
            if best <= lower * (1 + rel_gap) + 1e-12 or status != "optimal":
                break
            if time.perf_counter() - t_start > time_limit:
                status = "time_limit"
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
            inc[z] = best_z
            inc[q] = (best_z - x) ** 2
            try:
                h.setSolution(_as_solution(highspy, inc))
            except AttributeError:  # an older highspy without setSolution: the solve is merely slower
                pass
            status, sol, lb = solve()
            if sol is None:
                break
            lower = max(lower, math.sqrt(max(lb, 0.0)))
            cand = float(np.linalg.norm(sol[z] - x))
            if cand < best:
                best, best_z, target = cand, sol[z].copy(), target_of(sol)
        lower = min(lower, best)
    return {"distance": best, "lower": float(lower), "x_adv": np.clip(best_z, 0.0, 1.0), "status": status,
            "target": target}
