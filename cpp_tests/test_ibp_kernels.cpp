// Fused interval ReLU (bit-identical to the plain formula, in place and out of place, across block and thread
// boundaries) and CROWN kernels against a naive double loop: ReLU step (multiplier bit-identical, bias to rounding),
// concretization sums for every dual norm, rows longer than one chunk, and independence of the thread count.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "ibp/ibp_kernels.h"
#include "expect.h"

using namespace fastcert;

namespace {

bool close(double a, double b, double tol) { return std::fabs(a - b) <= tol * (1.0 + std::fabs(b)); }

void relu_case(int64_t B, int64_t K, int64_t F, int threads, std::mt19937_64& rng) {
  std::normal_distribution<float> nd;
  std::uniform_real_distribution<float> ud(0.f, 2.f);
  std::vector<float> lam(B * K * F), al(B * F), au(B * F), t(B * F), bias(B * K);
  for (auto& v : lam) v = nd(rng);
  for (int64_t i = 0; i < B * K * F; i += 5) lam[i] = 0.f;
  for (int64_t i = 0; i < B * F; ++i) {
    const float lo = nd(rng), hi = lo + ud(rng);
    const bool unstable = lo < 0 && hi > 0;
    al[i] = unstable ? float(hi > -lo) : float(lo >= 0);
    au[i] = unstable ? hi / (hi - lo) : float(lo >= 0);
    t[i] = unstable ? -lo : 0.f;
  }
  for (auto& v : bias) v = nd(rng);
  std::vector<float> want_lam(lam.size());
  std::vector<double> want_bias(bias.size());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t k = 0; k < K; ++k) {
      double s = bias[b * K + k];
      for (int64_t f = 0; f < F; ++f) {
        const float v = lam[(b * K + k) * F + f];
        const float w = v * (v >= 0 ? al[b * F + f] : au[b * F + f]);
        want_lam[(b * K + k) * F + f] = w;
        if (w < 0) s += double(w) * double(t[b * F + f]);
      }
      want_bias[b * K + k] = s;
    }
  crown_relu_back_f32(lam.data(), al.data(), au.data(), t.data(), bias.data(), B, K, F, threads);
  for (size_t i = 0; i < lam.size(); ++i) EXPECT(lam[i] == want_lam[i]);
  for (size_t i = 0; i < bias.size(); ++i) EXPECT(close(bias[i], want_bias[i], 1e-5));
}

void concretize_case(int64_t B, int64_t K, int64_t F, int dual, int threads, std::mt19937_64& rng) {
  std::normal_distribution<double> nd;
  std::vector<double> lam(B * K * F), c(B * F), r(B * F), x(B * F), out(B * K * 4);
  for (auto& v : lam) v = nd(rng);
  for (auto& v : c) v = nd(rng);
  for (auto& v : r) v = std::fabs(nd(rng));
  for (auto& v : x) v = nd(rng);
  crown_concretize_f64(lam.data(), c.data(), r.data(), dual ? x.data() : nullptr, B, K, F, dual, out.data(), threads);
  for (int64_t i = 0; i < B * K; ++i) {
    const int64_t b = i / K;
    double dc = 0, dr = 0, dx = 0, dd = 0;
    for (int64_t f = 0; f < F; ++f) {
      const double v = lam[i * F + f];
      dc += v * c[b * F + f];
      dr += std::fabs(v) * r[b * F + f];
      if (dual) dx += v * x[b * F + f];
      if (dual == 1) dd += v * v;
      if (dual == 2) dd = std::fmax(dd, std::fabs(v));
    }
    EXPECT(close(out[4 * i], dc, 1e-12));
    EXPECT(close(out[4 * i + 1], dr, 1e-12));
    EXPECT(close(out[4 * i + 2], dx, 1e-12));
    EXPECT(close(out[4 * i + 3], dd, 1e-12));
  }
}

void interval_relu_case(int64_t n, int threads) {
  std::mt19937_64 rng(n);
  std::normal_distribution<float> nd;
  std::vector<float> c(n), r(n), co(n), ro(n);
  for (int64_t i = 0; i < n; ++i) {
    c[i] = nd(rng);
    r[i] = std::fabs(nd(rng));
  }
  interval_relu_f32(c.data(), r.data(), co.data(), ro.data(), n, threads);
  for (int64_t i = 0; i < n; ++i) {
    const float lo = std::fmax(c[i] - r[i], 0.f), hi = std::fmax(c[i] + r[i], 0.f);
    EXPECT(co[i] == (hi + lo) * 0.5f);
    EXPECT(ro[i] == (hi - lo) * 0.5f);
  }
  interval_relu_f32(c.data(), r.data(), c.data(), r.data(), n, threads);
  EXPECT(c == co);
  EXPECT(r == ro);
}

void threads_do_not_matter() {
  std::mt19937_64 rng(11);
  std::normal_distribution<float> nd;
  const int64_t B = 3, K = 4, F = 1500;
  std::vector<float> lam0(B * K * F), al(B * F, 0.5f), au(B * F, 0.25f), t(B * F, 1.5f);
  for (auto& v : lam0) v = nd(rng);
  std::vector<float> ref_lam, ref_bias;
  for (int threads : {1, 2, 5}) {
    std::vector<float> lam = lam0, bias(B * K, 0.f);
    crown_relu_back_f32(lam.data(), al.data(), au.data(), t.data(), bias.data(), B, K, F, threads);
    if (ref_lam.empty()) {
      ref_lam = lam;
      ref_bias = bias;
    } else {
      EXPECT(lam == ref_lam);
      EXPECT(bias == ref_bias);
    }
  }
}

}  // namespace

int main() {
  std::mt19937_64 rng(5);
  for (int64_t F : {1, 7, 512, 513, 1300}) relu_case(2, 3, F, 2, rng);
  relu_case(1, 1, 4096, 1, rng);
  for (int dual : {0, 1, 2})
    for (int64_t F : {1, 513, 1100}) concretize_case(2, 3, F, dual, 2, rng);
  threads_do_not_matter();
  for (int64_t n : {1, 100, 16384, 16385, 50000}) interval_relu_case(n, 2);
  if (failures) std::fprintf(stderr, "test_ibp_kernels: %d failures\n", failures);
  else std::printf("test_ibp_kernels: ok\n");
  return failures ? 1 : 0;
}
