// Fused CPU kernels of interval bound propagation (fastcert.ibp): the interval ReLU of the forward pass, and
// CROWN's backward steps, which read the multiplier Lambda once.
//
// interval_relu: the ReLU of a box in center/radius form, elementwise over n entries:
//   lo = max(c - r, 0), hi = max(c + r, 0), c_out = (hi + lo) / 2, r_out = (hi - lo) / 2,
// the same float operations as the torch path (halving is exact). NaN propagates. c_out / r_out may be c /
// r themselves (in place); no other overlap is allowed (fastcert._native checks).
//
// Lambda is a (B, K, F) row-major buffer: B samples, K linear functions per sample (specification rows
// and their negations), F features of the layer (in whatever order the caller stores them; the
// per-sample buffers must use the same order). Per-sample buffers are (B, F), sums are (B, K).
//
// relu_back: the step through a ReLU with the CROWN relaxation, in place. For every entry,
//   lam <- lam * (lam >= 0 ? a_l : a_u),   and   bias += sum_f min(lam_new, 0) * t
// (the lower line a_l z for positive multipliers, the upper line a_u (z + t) for negative ones). NaN
// multipliers take the upper line, as torch.where(lam >= 0, ...) does, and make the bias NaN. Sums accumulate
// in double. No buffer may overlap lam or bias (fastcert._native checks).
//
// concretize: per (b, k), in one read of Lambda, the sums
//   out[.., 0] = sum lam * c,   out[.., 1] = sum |lam| * r,
//   out[.., 2] = sum lam * x    (0 when x is null),
//   out[.., 3] = sum lam^2 (dual = 1, l2), max |lam| (dual = 2, l1; NaN entries are skipped by the max,
//                but they make the sums above NaN, so the bound is NaN either way), 0 (dual = 0).
// out is (B, K, 4) double.
//
// Threads: rows (b, k) are split statically over `threads` OpenMP threads (<= 0: OpenMP's default); the
// result does not depend on the thread count (each row is summed by one thread in a fixed order).
#pragma once
#include <cstdint>

namespace fastcert {

void interval_relu_f32(const float* c, const float* r, float* c_out, float* r_out, int64_t n, int threads);
void interval_relu_f64(const double* c, const double* r, double* c_out, double* r_out, int64_t n, int threads);

void crown_relu_back_f32(float* lam, const float* a_l, const float* a_u, const float* t, float* bias, int64_t B,
                         int64_t K, int64_t F, int threads);
void crown_relu_back_f64(double* lam, const double* a_l, const double* a_u, const double* t, double* bias,
                         int64_t B, int64_t K, int64_t F, int threads);
void crown_concretize_f32(const float* lam, const float* c, const float* r, const float* x, int64_t B, int64_t K,
                          int64_t F, int dual, double* out, int threads);
void crown_concretize_f64(const double* lam, const double* c, const double* r, const double* x, int64_t B,
                          int64_t K, int64_t F, int dual, double* out, int threads);

}  // namespace fastcert
