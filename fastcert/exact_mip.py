"""Exact minimal adversarial perturbations of small ReLU networks by mixed-integer programming (HiGHS).

The network is an affine/ReLU chain ``[(W_1, b_1), ..., (W_L, b_L)]`` (see
:func:`fastcert.attacks.affine_relu_layers`) on inputs in [0, 1]^D. For a point x of class y the program

    minimize ||z - x||_p   over z in [0, 1]^D with ||z - x||_inf <= R,
    a_k = ReLU(W_k a_{k-1} + b_k)   (big-M with binary phase variables, bounds from interval arithmetic),
    f_j(z) >= f_y(z) for at least one j != y (one binary per class)

is solved to optimality. R is an upper bound on the answer (an attack's distance); it only tightens the
big-M constants (every l1/l2 ball of radius R lies in the linf ball of radius R). l1 and linf are MILPs;
l2 is solved as a sequence of MILPs that minimize a polyhedral outer approximation t of ||z - x||_2
(t >= u.(z - x) for unit vectors u, cuts added at each solution) until the best adversarial point's
norm is within ``rel_gap`` of the lower bound t, or time runs out (status "time_limit"; ``lower`` and
``distance`` then bracket the answer). In 64 dimensions this outer approximation converges slowly, so
:func:`fastcert.curve` offers ``method="exact"`` for l1 and linf only. Requires ``highspy``.
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


def mip_min_perturbation(layers, x, y, norm, upper=None, time_limit=60.0, rel_gap=1e-4, max_cuts=200):
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
    else:
        s = new_vars(D, 0.0, np.maximum(hi - x, x - lo), c=1.0 if norm == "l1" else 0.0)
        for i in range(D):
            rows.add([z[i], s[i]], [1.0, -1.0], -inf, x[i])
            rows.add([z[i], s[i]], [1.0, 1.0], x[i], inf)
        if norm == "l1":
            rows.add(s, np.ones(D), -inf, R * D if upper is None else R)
        else:
            t = new_vars(1, 0.0, R * math.sqrt(D), c=1.0)[0]
            rows.add(np.r_[s, t], np.r_[np.ones(D) / math.sqrt(D), -1.0], -inf, 0.0)  # t >= ||.||_1 / sqrt(D)
            rows.add(np.r_[s, t], np.r_[np.zeros(D), 1.0], 0.0, R if upper is not None else inf)
            for i in range(D):  # t >= |z_i - x_i|
                rows.add([s[i], t], [1.0, -1.0], -inf, 0.0)

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

    def solve():
        h.setOptionValue("time_limit", float(time_limit))
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
    if sol is None:
        return {"distance": float("inf") if status == "infeasible" else float("nan"), "lower": lower,
                "x_adv": None, "status": status, "target": -1}
    best_z = sol[z].copy()
    best = float(np.linalg.norm(best_z - x, order))
    if norm == "l2":
        t_start = time.perf_counter()
        for _ in range(max_cuts):
            if best <= lower * (1 + rel_gap) + 1e-12 or status != "optimal":
                break
            if time.perf_counter() - t_start > time_limit:
                status = "time_limit"
                break
            v = sol[z] - x
            nv = np.linalg.norm(v)
            if nv <= 0:
                break
            u = v / nv
            # t >= u . (z - x) for both signs is implied by |.|; one cut in the found direction suffices
            h.addRow(-float(u @ x), inf, D + 1, np.r_[z, t].astype(np.int32), np.r_[-u, 1.0])
            status, sol, lower = solve()
            if sol is None:
                break
            cand = float(np.linalg.norm(sol[z] - x))
            if cand < best:
                best, best_z = cand, sol[z].copy()
        lower = min(lower, best)
    target = next((j for j, e in e_vars.items() if sol is not None and sol[e] > 0.5), -1)
    return {"distance": best, "lower": float(lower), "x_adv": np.clip(best_z, 0.0, 1.0), "status": status,
            "target": target}
