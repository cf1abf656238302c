// Exact arithmetic core of stratified discrete (l0) randomized smoothing: Lee, Yuan, Chang &
// Jaakkola 2019, "A Stratified Approach to Robustness for Randomly Smoothed Classifiers".
//
// Noise: each coordinate of x in {0, 1/K, ..., 1}^d is kept with probability alpha, else replaced by
// one of the K other levels, each with probability beta = (1 - alpha) / K. For x, x' at l0
// distance r only the r differing coordinates matter. L(u, v; r) is the set of their noisy values
// with u coordinates equal to x's value, v equal to x''s and w = r - u - v equal to neither:
//   |L(u, v; r)| = r! / (u! v! w!) (K - 1)^w,
//   P(L | x) = |L| alpha^u beta^(r-u),   P(L | x') = |L| alpha^v beta^(r-v).
// The likelihood ratio P(z|x) / P(z|x') = (alpha/beta)^(u-v) depends only on s = u - v, so the
// regions merge into 2r + 1 groups s = -r..r. With alpha = a/b, c = b - a, h = aK, m = (K-1)c:
//   D_r P(group s | x) = [y^(r+s)] (c + m y + h y^2)^r,   D_r = (bK)^r,
//   P(group s | x') = P(group -s | x)   (swap the roles of u and v).
// Every term of the polynomial is one (u, v) region: h y^2 for "equals x" (u), c for "equals x'"
// (v), m y for "neither" (w), so the exponent of y is 2u + w = r + s. Stepping r -> r + 1 is one
// multiplication by a quadratic, so all radii 0..R cost O(R^3) limb operations in total.
//
// Threshold rho_r^{-1}(p): the Neyman-Pearson worst case fills groups in decreasing order of the
// likelihood ratio (decreasing s when alpha > beta, increasing s when alpha < beta; every order is
// the same when alpha = beta). rho_r(q) = min P(S | x') over (fractional) sets S with P(S | x) >= q
// is continuous and strictly increasing (all masses are positive), so rho_r^{-1}(p) is the unique q
// with rho_r(q) = p, and a lower bound p_A on P(f(z) = c | x) certifies radius r iff
// p_A > rho_r^{-1}(p) (strict): then the worst case P(f(z') = c | x') > p.
#pragma once

#include <cstdint>
#include <vector>

#include "stratified/biguint.h"

namespace fastcert {
namespace stratified {

// Radii above this are refused: the polynomial for r holds 2r+1 numbers of about r log2(bK) bits.
constexpr uint32_t kMaxRadius = 20000;

// |L(u, v; r)| for u = 0..r, v = 0..r-u, in that order (row-major over u; entry count
// (r+1)(r+2)/2). K >= 1; for K = 1 every region with w > 0 is empty (0^0 = 1 for w = 0).
std::vector<BigUInt> region_cardinalities(uint32_t r, const BigUInt& K);

// Noise parameters alpha = a / b (0 < a < b) and K >= 1; throws std::invalid_argument otherwise.
struct DiscreteNoise {
  BigUInt a, b, K;
  DiscreteNoise(BigUInt a_, BigUInt b_, BigUInt K_);
};

// Coefficients j = 0..2r of (c + m y + h y^2)^r, i.e. D_r P(group s = j - r | x), where
// D_r = (bK)^r is written to *denom when denom is not null.
std::vector<BigUInt> group_masses(const DiscreteNoise& noise, uint32_t r, BigUInt* denom);

// An unreduced exact fraction num / den (den > 0).
struct Fraction {
  BigUInt num, den;
};

// rho_r^{-1}(p) for each r in radii (any order, repeats allowed), p = pn / pd with 0 < pn < pd.
// One pass over r = 0..max(radii).
std::vector<Fraction> thresholds(const DiscreteNoise& noise, const BigUInt& pn, const BigUInt& pd,
                                 const std::vector<uint32_t>& radii);

}  // namespace stratified
}  // namespace fastcert
