// Tests for BigUInt and the stratified (l0) threshold core. Plain asserts via CHECK (active in
// Release builds too); returns non-zero on the first failure.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "stratified/biguint.h"
#include "stratified/stratified.h"

using fastcert::BigUInt;
namespace st = fastcert::stratified;

#define CHECK(cond)                                                         \
  do {                                                                      \
    if (!(cond)) {                                                          \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      std::exit(1);                                                         \
    }                                                                       \
  } while (0)

template <typename Ex, typename F>
bool throws(F f) {
  try {
    f();
  } catch (const Ex&) {
    return true;
  }
  return false;
}

static BigUInt D(const char* s) { return BigUInt::from_decimal(s); }

static BigUInt factorial(uint32_t n) {
  BigUInt f(1);
  for (uint32_t i = 2; i <= n; ++i) f.mul_small(i);
  return f;
}

// C(n, k) by the multiplicative formula (each partial product is an exact binomial).
static BigUInt binom(uint32_t n, uint32_t k) {
  BigUInt c(1);
  for (uint32_t i = 0; i < k; ++i) {
    c.mul_small(n - i);
    CHECK(c.divmod_small(i + 1) == 0);
  }
  return c;
}

static void test_biguint_basics() {
  CHECK(BigUInt().is_zero() && BigUInt().to_decimal() == "0");
  CHECK(BigUInt(0).is_zero());
  CHECK(BigUInt(18446744073709551615ull).to_decimal() == "18446744073709551615");
  BigUInt two64 = BigUInt(18446744073709551615ull) + BigUInt(1);
  CHECK(two64.to_decimal() == "18446744073709551616");
  CHECK(two64.bit_length() == 65);
  CHECK(BigUInt::pow(BigUInt(2), 128).to_decimal() == "340282366920938463463374607431768211456");
  CHECK(BigUInt::pow(BigUInt(2), 128) == two64 * two64);
  // 2^128 - 1 has sixteen 0xff bytes; subtraction borrows through every limb.
  BigUInt m128 = BigUInt::pow(BigUInt(2), 128) - BigUInt(1);
  std::vector<uint8_t> bytes = m128.to_bytes_le();
  CHECK(bytes.size() == 16);
  for (uint8_t byte : bytes) CHECK(byte == 0xff);
  CHECK(BigUInt::from_bytes_le(bytes.data(), bytes.size()) == m128);
  const uint8_t padded[] = {0x39, 0x30, 0, 0, 0, 0, 0};  // 12345 with leading zero bytes
  CHECK(BigUInt::from_bytes_le(padded, sizeof padded) == BigUInt(12345));
  CHECK(BigUInt::from_bytes_le(nullptr, 0).is_zero());
  CHECK(BigUInt(12345).to_u64() == 12345);
  CHECK(throws<std::overflow_error>([&] { (void)BigUInt::pow(BigUInt(2), 64).to_u64(); }));
  CHECK((BigUInt::pow(BigUInt(2), 64) - BigUInt(1)).to_u64() == 18446744073709551615ull);
  // Mersenne prime 2^61 - 1 and its decimal form.
  CHECK((BigUInt::pow(BigUInt(2), 61) - BigUInt(1)).to_decimal() == "2305843009213693951");
  // Decimal round trip of a long number with internal zero chunks.
  const std::string s = "1000000000000000000000000000000000001000000000000000000000000000000000000000000000007";
  CHECK(D(s.c_str()).to_decimal() == s);
  CHECK(throws<std::invalid_argument>([] { (void)BigUInt::from_decimal("12a"); }));
  CHECK(throws<std::invalid_argument>([] { (void)BigUInt::from_decimal(""); }));
  CHECK(throws<std::domain_error>([] { BigUInt x(3); x -= BigUInt(4); }));
  CHECK(throws<std::domain_error>([] { BigUInt x(3); (void)x.divmod_small(0); }));
  // Ordering.
  CHECK(BigUInt(5) < BigUInt(7) && BigUInt(7) > BigUInt(5) && two64 > BigUInt(18446744073709551615ull));
  CHECK(compare(D("340282366920938463463374607431768211457"), BigUInt::pow(BigUInt(2), 128)) == 1);
  // Aliasing: x += x and x.add_mul_small(x, m).
  BigUInt x = D("123456789012345678901234567890");
  BigUInt y = x;
  y += y;
  CHECK(y.to_decimal() == "246913578024691357802469135780");
  y = x;
  y.add_mul_small(y, 3);
  CHECK(y.to_decimal() == "493827156049382715604938271560");
}

static void test_biguint_identities() {
  // Known factorials.
  CHECK(factorial(20).to_decimal() == "2432902008176640000");
  CHECK(factorial(30).to_decimal() == "265252859812191058636308480000000");
  const std::string f100 = factorial(100).to_decimal();
  CHECK(f100.size() == 158);
  int digit_sum = 0;
  for (char ch : f100) digit_sum += ch - '0';
  CHECK(digit_sum == 648);                           // the classic digit sum of 100!
  CHECK(f100.substr(f100.size() - 24) == std::string(24, '0'));  // 100! ends in 24 zeros
  // n! = n (n-1)! via the general product, and exact division back.
  BigUInt f99 = factorial(99);
  CHECK(f99 * BigUInt(100) == factorial(100));
  BigUInt q = factorial(100);
  CHECK(q.divmod_small(100) == 0 && q == f99);
  // Binomials: C(100, 50) (known value), sum_k C(n,k) = 2^n, sum_k C(n,k)^2 = C(2n, n).
  CHECK(binom(100, 50).to_decimal() == "100891344545564193334812497256");
  for (uint32_t n : {1u, 7u, 64u, 200u}) {
    BigUInt sum, sum_sq;
    for (uint32_t k = 0; k <= n; ++k) {
      BigUInt c = binom(n, k);
      sum += c;
      sum_sq += c * c;
    }
    CHECK(sum == BigUInt::pow(BigUInt(2), n));
    CHECK(sum_sq == binom(2 * n, n));
  }
  // C(n, k) = n! / (k! (n-k)!): multiply back.
  CHECK(binom(90, 37) * factorial(37) * factorial(53) == factorial(90));
  // (a + b)^2 = a^2 + 2ab + b^2 and (a + b)(a - b) = a^2 - b^2 for large multi-limb a, b.
  BigUInt a = factorial(77) + BigUInt(12345), b = BigUInt::pow(BigUInt(3), 150);
  BigUInt lhs = (a + b) * (a + b), rhs = a * a + b * b;
  rhs.add_mul(a, b);
  rhs.add_mul(a, b);
  CHECK(lhs == rhs);
  CHECK((a + b) * (a - b) + b * b == a * a);
  // add_mul with a multi-limb multiplier equals the product.
  BigUInt acc(7);
  acc.add_mul(a, b);
  CHECK(acc == a * b + BigUInt(7));
}

static void test_cardinalities() {
  for (uint32_t K : {1u, 2u, 3u, 255u}) {
    for (uint32_t r : {0u, 1u, 2u, 5u, 13u, 40u}) {
      std::vector<BigUInt> card = st::region_cardinalities(r, BigUInt(K));
      CHECK(card.size() == size_t(r + 1) * (r + 2) / 2);
      BigUInt total;
      size_t idx = 0;
      for (uint32_t u = 0; u <= r; ++u)
        for (uint32_t v = 0; v <= r - u; ++v, ++idx) {
          const uint32_t w = r - u - v;
          // r!/(u! v! w!) (K-1)^w, written through factorials independently of the library's chain.
          BigUInt expect = factorial(r);
          BigUInt den = factorial(u) * factorial(v) * factorial(w);
          BigUInt check = BigUInt::pow(BigUInt(K - 1), w) * expect;
          CHECK(card[idx] * den == check);
          total += card[idx];
        }
      CHECK(total == BigUInt::pow(BigUInt(K + 1), r));  // the regions partition {0..K}^r
    }
  }
  CHECK(throws<std::invalid_argument>([] { (void)st::region_cardinalities(1, BigUInt(0)); }));
  CHECK(throws<std::invalid_argument>([] { (void)st::region_cardinalities(st::kMaxRadius + 1, BigUInt(2)); }));
}

static bool frac_eq(const st::Fraction& f, uint64_t n, uint64_t d) {
  return f.num * BigUInt(d) == f.den * BigUInt(n);
}

static int frac_cmp(const st::Fraction& f, const st::Fraction& g) { return compare(f.num * g.den, g.num * f.den); }

static void test_group_masses() {
  // alpha = 4/5, K = 255: the masses sum to D = (bK)^r and mirror under s -> -s when alpha = beta.
  const st::DiscreteNoise n1(BigUInt(4), BigUInt(5), BigUInt(255));
  for (uint32_t r : {0u, 1u, 9u, 30u}) {
    BigUInt denom;
    std::vector<BigUInt> g = st::group_masses(n1, r, &denom);
    CHECK(g.size() == 2 * size_t(r) + 1);
    BigUInt sum;
    for (const BigUInt& v : g) sum += v;
    CHECK(denom == BigUInt::pow(BigUInt(5 * 255), r));
    CHECK(sum == denom);
  }
  // r = 1 by hand: s = -1: c = 1; s = 0: (K-1)c = 254; s = 1: aK = 1020.
  std::vector<BigUInt> g1 = st::group_masses(n1, 1, nullptr);
  CHECK(g1[0] == BigUInt(1) && g1[1] == BigUInt(254) && g1[2] == BigUInt(1020));
  const st::DiscreteNoise flat(BigUInt(1), BigUInt(4), BigUInt(3));  // alpha = beta = 1/4
  std::vector<BigUInt> g = st::group_masses(flat, 12, nullptr);
  for (size_t j = 0; j < g.size(); ++j) CHECK(g[j] == g[g.size() - 1 - j]);
  CHECK(throws<std::invalid_argument>([] { st::DiscreteNoise bad(BigUInt(5), BigUInt(5), BigUInt(1)); }));
  CHECK(throws<std::invalid_argument>([] { st::DiscreteNoise bad(BigUInt(0), BigUInt(5), BigUInt(1)); }));
  CHECK(throws<std::invalid_argument>([] { st::DiscreteNoise bad(BigUInt(1), BigUInt(5), BigUInt(0)); }));
}

static void test_thresholds() {
  const BigUInt half_n(1), half_d(2);
  // K = 1, alpha = 4/5: hand-derived values 1/2, 7/8, 31/32, 127/128, 3971/4000
  // (e.g. r = 1: take "equals x" (P_x = 4/5, P_x' = 1/5), then 3/10 of x'-mass from "equals x'" at
  // ratio 1/4: 4/5 + 3/40 = 7/8).
  const st::DiscreteNoise bin(BigUInt(4), BigUInt(5), BigUInt(1));
  std::vector<st::Fraction> t = st::thresholds(bin, half_n, half_d, {0, 1, 2, 3, 4});
  CHECK(frac_eq(t[0], 1, 2) && frac_eq(t[1], 7, 8) && frac_eq(t[2], 31, 32) && frac_eq(t[3], 127, 128));
  CHECK(frac_eq(t[4], 3971, 4000));
  // K = 255, alpha = 1/5, r = 1: alpha + (1/2 - beta) = 7/10 - 4/1275 = 1777/2550.
  const st::DiscreteNoise img(BigUInt(1), BigUInt(5), BigUInt(255));
  std::vector<st::Fraction> ti = st::thresholds(img, half_n, half_d, {1, 0});
  CHECK(frac_eq(ti[0], 1777, 2550) && frac_eq(ti[1], 1, 2));
  // rho_0^{-1}(p) = p for any p; alpha = beta gives p at every radius.
  std::vector<st::Fraction> t3 = st::thresholds(img, BigUInt(3), BigUInt(7), {0});
  CHECK(frac_eq(t3[0], 3, 7));
  const st::DiscreteNoise flat(BigUInt(1), BigUInt(4), BigUInt(3));
  for (const st::Fraction& f : st::thresholds(flat, half_n, half_d, {0, 3, 17})) CHECK(frac_eq(f, 1, 2));
  // Monotone non-decreasing in r, strictly below 1, for alpha = 0.95, K = 255 up to r = 120.
  const st::DiscreteNoise hi(BigUInt(19), BigUInt(20), BigUInt(255));
  std::vector<uint32_t> radii;
  for (uint32_t r = 0; r <= 120; ++r) radii.push_back(r);
  std::vector<st::Fraction> th = st::thresholds(hi, half_n, half_d, radii);
  for (size_t i = 0; i < th.size(); ++i) {
    CHECK(compare(th[i].num, th[i].den) < 0);
    if (i > 0) CHECK(frac_cmp(th[i - 1], th[i]) <= 0);
  }
  CHECK(frac_cmp(th[0], th[1]) < 0);
  // Radii in any order with repeats give the same values.
  std::vector<st::Fraction> th2 = st::thresholds(hi, half_n, half_d, {120, 3, 3, 0});
  CHECK(frac_cmp(th2[0], th[120]) == 0 && frac_cmp(th2[1], th[3]) == 0 && frac_cmp(th2[2], th[3]) == 0);
  CHECK(frac_cmp(th2[3], th[0]) == 0);
  // Bad p.
  CHECK(throws<std::invalid_argument>([&] { (void)st::thresholds(hi, BigUInt(2), BigUInt(2), {1}); }));
  CHECK(throws<std::invalid_argument>([&] { (void)st::thresholds(hi, BigUInt(0), BigUInt(2), {1}); }));
  CHECK(throws<std::invalid_argument>([&] { (void)st::thresholds(hi, half_n, half_d, {st::kMaxRadius + 1}); }));
}

int main() {
  test_biguint_basics();
  test_biguint_identities();
  test_cardinalities();
  test_group_masses();
  test_thresholds();
  std::printf("test_stratified: all checks passed\n");
  return 0;
}
