// Blocked nearest-neighbour kernel against a naive double loop: every norm, both element types,
// label split, self-exclusion, ties (smallest index wins), empty classes, and integer overflow guards.
#include <cassert>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <vector>

#include "distances/distances.h"

using namespace fastcert;

namespace {
int failures = 0;
#define CHECK(c)                                                      \
  do {                                                                \
    if (!(c)) {                                                       \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #c); \
      ++failures;                                                     \
    }                                                                 \
  } while (0)

template <typename T>
void naive(const std::vector<T>& q, int64_t nq, const std::vector<T>& r, int64_t nr, int64_t d,
           const std::vector<int64_t>& ql, const std::vector<int64_t>& rl, const int64_t* ex, int norm,
           std::vector<double>& inter, std::vector<int64_t>& ii, std::vector<double>& intra, std::vector<int64_t>& ia) {
  const double inf = std::numeric_limits<double>::infinity();
  inter.assign(nq, inf); intra.assign(nq, inf); ii.assign(nq, -1); ia.assign(nq, -1);
  for (int64_t i = 0; i < nq; ++i)
    for (int64_t j = 0; j < nr; ++j) {
      if (ex && ex[i] == j) continue;
      double v;
      if constexpr (std::is_same_v<T, uint8_t>) v = pair_distance_u8(&q[i * d], &r[j * d], d, norm);
      else v = pair_distance_f64(&q[i * d], &r[j * d], d, norm);
      if (rl[j] == ql[i]) { if (ia[i] < 0 || v < intra[i]) { intra[i] = v; ia[i] = j; } }
      else { if (ii[i] < 0 || v < inter[i]) { inter[i] = v; ii[i] = j; } }
    }
}

template <typename T>
void compare(int64_t nq, int64_t nr, int64_t d, int levels, int nclass, bool self, std::mt19937_64& rng) {
  std::uniform_int_distribution<int> lev(0, levels);
  std::uniform_int_distribution<int64_t> lab(0, nclass - 1);
  std::vector<T> r(nr * d);
  for (auto& v : r) v = std::is_same_v<T, uint8_t> ? T(lev(rng)) : T(double(lev(rng)) / levels + 1e-3 * (lev(rng) % 7));
  std::vector<int64_t> rl(nr);
  for (auto& v : rl) v = lab(rng);
  std::vector<T> q;
  std::vector<int64_t> ql, ex;
  if (self) {
    nq = nr; q = r; ql = rl; ex.resize(nq);
    for (int64_t i = 0; i < nq; ++i) ex[i] = i;
  } else {
    q.resize(nq * d);
    for (auto& v : q) v = std::is_same_v<T, uint8_t> ? T(lev(rng)) : T(double(lev(rng)) / levels);
    ql.resize(nq);
    for (auto& v : ql) v = lab(rng);
  }
  for (int norm = 0; norm < 3; ++norm) {
    std::vector<double> a_inter(nq), a_intra(nq), b_inter, b_intra;
    std::vector<int64_t> a_ii(nq), a_ia(nq), b_ii, b_ia;
    NearestOut out{a_inter.data(), a_ii.data(), a_intra.data(), a_ia.data()};
    const int64_t* exp = self ? ex.data() : nullptr;
    if constexpr (std::is_same_v<T, uint8_t>)
      nearest_by_label_u8(q.data(), nq, r.data(), nr, d, ql.data(), rl.data(), exp, norm, out);
    else
      nearest_by_label_f64(q.data(), nq, r.data(), nr, d, ql.data(), rl.data(), exp, norm, out);
    naive(q, nq, r, nr, d, ql, rl, exp, norm, b_inter, b_ii, b_intra, b_ia);
    for (int64_t i = 0; i < nq; ++i) {
      // uint8: integer sums, exact. double: the summation order differs, so compare to 1e-12 and check
      // that the returned neighbour's own naive distance is the minimum.
      if constexpr (std::is_same_v<T, uint8_t>) {
        CHECK(a_inter[i] == b_inter[i]); CHECK(a_intra[i] == b_intra[i]);
        CHECK(a_ii[i] == b_ii[i]); CHECK(a_ia[i] == b_ia[i]);
      } else {
        CHECK(std::fabs(a_inter[i] - b_inter[i]) <= 1e-12 * (1 + b_inter[i]) || a_inter[i] == b_inter[i]);
        CHECK(std::fabs(a_intra[i] - b_intra[i]) <= 1e-12 * (1 + b_intra[i]) || a_intra[i] == b_intra[i]);
        if (a_ii[i] >= 0) CHECK(std::fabs(pair_distance_f64(&q[i * d], &r[a_ii[i] * d], d, norm) - b_inter[i]) <= 1e-12 * (1 + b_inter[i]));
        CHECK((a_ii[i] < 0) == (b_ii[i] < 0)); CHECK((a_ia[i] < 0) == (b_ia[i] < 0));
      }
      if (self) CHECK(a_ia[i] != i);
      if (a_ii[i] >= 0) CHECK(rl[a_ii[i]] != ql[i]);
      if (a_ia[i] >= 0) CHECK(rl[a_ia[i]] == ql[i]);
    }
  }
}
}  // namespace

int main() {
  std::mt19937_64 rng(12345);
  // sizes that are not multiples of the blocks, coarse levels (many ties), one class (no inter neighbour)
  compare<uint8_t>(37, 613, 29, 3, 4, false, rng);
  compare<uint8_t>(0, 300, 17, 255, 3, true, rng);
  compare<uint8_t>(0, 50, 5, 1, 1, true, rng);
  compare<uint8_t>(20, 300, 784, 255, 10, false, rng);
  compare<double>(45, 530, 33, 7, 3, false, rng);
  compare<double>(0, 270, 64, 16, 10, true, rng);
  // a single reference that is the query itself: nothing left after exclusion
  {
    std::vector<uint8_t> x = {1, 2, 3};
    int64_t l = 0, ex = 0;
    double inter = 0, intra = 0;
    int64_t ii = 7, ia = 7;
    nearest_by_label_u8(x.data(), 1, x.data(), 1, 3, &l, &l, &ex, kDistL1, NearestOut{&inter, &ii, &intra, &ia});
    CHECK(std::isinf(inter) && std::isinf(intra) && ii == -1 && ia == -1);
  }
  // overflow: d = 70000 coordinates at maximal difference, sum of squares 70000 * 255^2 > 2^32
  {
    const int64_t d = 70000;
    std::vector<uint8_t> a(d, 0), b(d, 255);
    int64_t la = 0, lb = 1;
    double inter = 0, intra = 0;
    int64_t ii = 0, ia = 0;
    nearest_by_label_u8(a.data(), 1, b.data(), 1, d, &la, &lb, nullptr, kDistL2, NearestOut{&inter, &ii, &intra, &ia});
    CHECK(inter == double(d) * 65025.0 && ii == 0 && ia == -1);
    nearest_by_label_u8(a.data(), 1, b.data(), 1, d, &la, &lb, nullptr, kDistL1, NearestOut{&inter, &ii, &intra, &ia});
    CHECK(inter == double(d) * 255.0);
    nearest_by_label_u8(a.data(), 1, b.data(), 1, d, &la, &lb, nullptr, kDistLinf, NearestOut{&inter, &ii, &intra, &ia});
    CHECK(inter == 255.0);
  }
  if (failures) std::fprintf(stderr, "%d failures\n", failures);
  else std::printf("test_distances: ok (%d threads)\n", distances_max_threads());
  return failures ? 1 : 0;
}
