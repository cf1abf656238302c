// Region cardinalities, group masses and thresholds for stratified discrete smoothing; the math is
// in stratified.h. All arithmetic is exact (BigUInt); nothing here rounds.
#include "stratified/stratified.h"

#include <algorithm>
#include <map>
#include <stdexcept>
#include <string>

#include "common/check.h"

namespace fastcert {
namespace stratified {

namespace {

// Polynomial (c + m y + h y^2)^r, stepped one radius at a time, in place.
class GroupPolynomial {
 public:
  explicit GroupPolynomial(const DiscreteNoise& n)
      : c_(n.b - n.a), m_((n.K - BigUInt(1)) * (n.b - n.a)), h_(n.a * n.K), bK_(n.b * n.K) {
    coef_.emplace_back(1);  // r = 0: the polynomial 1
    denom_ = BigUInt(1);
  }
  uint32_t radius() const { return r_; }
  const std::vector<BigUInt>& coef() const { return coef_; }
  const BigUInt& denom() const { return denom_; }
  // alpha > beta <=> aK > b - a: the likelihood ratio grows with s = u - v.
  int ratio_direction() const { return compare(h_, c_); }

  void step() {
    // new[j] = c old[j] + m old[j-1] + h old[j-2]; going down in j keeps old[j-1], old[j-2] intact.
    const size_t n_old = coef_.size();  // 2r + 1
    coef_.resize(n_old + 2);
    BigUInt t;
    for (size_t j = n_old + 2; j-- > 0;) {
      t.set_zero();
      if (j < n_old) t.add_mul(coef_[j], c_);
      if (j >= 1 && j - 1 < n_old) t.add_mul(coef_[j - 1], m_);
      if (j >= 2) t.add_mul(coef_[j - 2], h_);
      std::swap(coef_[j], t);
    }
    denom_ *= bK_;
    ++r_;
  }

 private:
  BigUInt c_, m_, h_, bK_;
  std::vector<BigUInt> coef_;
  BigUInt denom_;
  uint32_t r_ = 0;
};

// Neyman-Pearson fill for the current radius of `poly`; see stratified.h for the convention.
Fraction threshold_at(const GroupPolynomial& poly, const BigUInt& pn, const BigUInt& pd) {
  const std::vector<BigUInt>& C = poly.coef();
  const size_t last = C.size() - 1;  // 2r
  const bool descending = poly.ratio_direction() > 0;
  const BigUInt target = pn * poly.denom();  // pd * D * p
  BigUInt prev_a, prev_b_pd, next_b_pd;     // mass under x, and pd * mass under x', of groups taken
  for (size_t k = 0; k <= last; ++k) {
    const size_t j = descending ? last - k : k;  // j = r + s
    const BigUInt& A = C[j];                     // D * P(group s | x)
    const BigUInt& B = C[last - j];              // D * P(group s | x') = D * P(group -s | x)
    if (B.is_zero()) continue;                   // empty group (K = 1, wrong parity); A is 0 too
    next_b_pd = prev_b_pd;
    next_b_pd.add_mul(B, pd);
    if (compare(next_b_pd, target) >= 0) {
      // Take the fraction (p D - prevB) / B of this group:
      //   t = [prevA + (p D - prevB) A / B] / D = [prevA pd B + (pn D - pd prevB) A] / (D pd B).
      Fraction f;
      BigUInt pd_b = pd * B;
      f.num = prev_a * pd_b;
      BigUInt rest = target;
      rest -= prev_b_pd;  // > 0: the previous groups did not reach p
      f.num.add_mul(rest, A);
      f.den = poly.denom() * pd_b;
      return f;
    }
    std::swap(prev_b_pd, next_b_pd);
    prev_a += A;
  }
  // Unreachable for p < 1: the groups' x'-masses sum to D > p D.
  throw std::logic_error("fastcert stratified: threshold fill did not reach p");
}

}  // namespace

DiscreteNoise::DiscreteNoise(BigUInt a_, BigUInt b_, BigUInt K_) : a(std::move(a_)), b(std::move(b_)), K(std::move(K_)) {
  FASTCERT_CHECK_ARG(!a.is_zero() && a < b, "alpha = a/b must satisfy 0 < a < b (alpha in (0, 1))");
  FASTCERT_CHECK_ARG(!K.is_zero(), "K must be >= 1");
}

std::vector<BigUInt> region_cardinalities(uint32_t r, const BigUInt& K) {
  FASTCERT_CHECK_ARG(r <= kMaxRadius, "r must be <= " + std::to_string(kMaxRadius));
  FASTCERT_CHECK_ARG(!K.is_zero(), "K must be >= 1");
  const BigUInt km1 = K - BigUInt(1);
  std::vector<BigUInt> pw(r + 1);  // (K-1)^w
  pw[0] = BigUInt(1);
  for (uint32_t w = 1; w <= r; ++w) pw[w] = pw[w - 1] * km1;

  std::vector<BigUInt> out;
  out.reserve(size_t(r + 1) * (r + 2) / 2);
  BigUInt binom_r_u(1);  // C(r, u)
  for (uint32_t u = 0; u <= r; ++u) {
    const uint32_t n = r - u;
    BigUInt binom_n_v(1);  // C(n, v)
    for (uint32_t v = 0; v <= n; ++v) {
      out.push_back(binom_r_u * binom_n_v * pw[n - v]);  // r!/(u! v! w!) = C(r,u) C(r-u,v)
      if (v < n) {  // C(n, v+1) = C(n, v) (n - v) / (v + 1), exact
        binom_n_v.mul_small(n - v);
        if (binom_n_v.divmod_small(v + 1) != 0) throw std::logic_error("inexact binomial step");
      }
    }
    if (u < r) {
      binom_r_u.mul_small(r - u);
      if (binom_r_u.divmod_small(u + 1) != 0) throw std::logic_error("inexact binomial step");
    }
  }
  return out;
}

std::vector<BigUInt> group_masses(const DiscreteNoise& noise, uint32_t r, BigUInt* denom) {
  FASTCERT_CHECK_ARG(r <= kMaxRadius, "r must be <= " + std::to_string(kMaxRadius));
  GroupPolynomial poly(noise);
  while (poly.radius() < r) poly.step();
  if (denom != nullptr) *denom = poly.denom();
  return poly.coef();
}

std::vector<Fraction> thresholds(const DiscreteNoise& noise, const BigUInt& pn, const BigUInt& pd,
                                 const std::vector<uint32_t>& radii) {
  FASTCERT_CHECK_ARG(!pn.is_zero() && pn < pd, "p = pn/pd must satisfy 0 < pn < pd (p in (0, 1))");
  if (radii.empty()) return {};
  const uint32_t rmax = *std::max_element(radii.begin(), radii.end());
  FASTCERT_CHECK_ARG(rmax <= kMaxRadius, "radii must be <= " + std::to_string(kMaxRadius));
  std::map<uint32_t, Fraction> at;  // computed once per distinct radius
  for (uint32_t r : radii) at.emplace(r, Fraction{});
  GroupPolynomial poly(noise);
  for (auto& kv : at) {  // ascending radius
    while (poly.radius() < kv.first) poly.step();
    kv.second = threshold_at(poly, pn, pd);
  }
  std::vector<Fraction> out;
  out.reserve(radii.size());
  for (uint32_t r : radii) out.push_back(at.at(r));
  return out;
}

}  // namespace stratified
}  // namespace fastcert
