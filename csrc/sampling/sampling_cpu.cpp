// CPU (OpenMP) fused sampling and counting. One pass over the caller's buffer: each Philox call
// yields four noise values that are added to x and stored; no noise tensor is ever materialized.
#include "sampling/sampling.h"

#include <algorithm>
#include <cmath>
#include <vector>

#ifdef FASTCERT_OPENMP
#include <omp.h>
#endif

namespace fastcert {

int max_threads() {
#ifdef FASTCERT_OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

namespace {

constexpr int64_t kParallelMinWork = 1 << 16;

// One sample row of a continuous noise: rows are independent, so OpenMP splits over rows and the
// compiler vectorizes over groups (all four stores are unit-stride thanks to the slice layout).
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define FASTCERT_X86_DISPATCH 1
#define FASTCERT_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define FASTCERT_ALWAYS_INLINE inline
#endif

template <int TYPE, bool ADD_X>
FASTCERT_ALWAYS_INLINE void continuous_row_body(const float* x, int64_t D, float* row, uint64_t seed,
                                                uint32_t stream, uint64_t sample, float scale) {
  const int64_t G = (D + 3) / 4;
  // groups whose four coordinates all exist: k * G + g < D for k = 3  <=>  g < D - 3G
  const int64_t full = std::max<int64_t>(0, std::min<int64_t>(G, D - 3 * G));
  const uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  const uint32_t s_lo = static_cast<uint32_t>(sample), s_hi = static_cast<uint32_t>(sample >> 32);
  float* r0 = row;
  float* r1 = row + G;
  float* r2 = row + 2 * G;
  float* r3 = row + 3 * G;
  const float* x0 = x;
  const float* x1 = x + G;
  const float* x2 = x + 2 * G;
  const float* x3 = x + 3 * G;
#pragma omp simd
  for (int64_t g = 0; g < full; ++g) {
    uint32_t w0 = static_cast<uint32_t>(g), w1 = s_lo, w2 = s_hi, w3 = stream;
    philox4x32_10_inplace(w0, w1, w2, w3, k0, k1);
    float v0, v1, v2, v3;
    if (TYPE == kGaussian) {
      box_muller(w0, w1, v0, v1);
      box_muller(w2, w3, v2, v3);
    } else if (TYPE == kLaplace) {
      v0 = laplace1(w0);
      v1 = laplace1(w1);
      v2 = laplace1(w2);
      v3 = laplace1(w3);
    } else {
      v0 = uniform_pm1(w0);
      v1 = uniform_pm1(w1);
      v2 = uniform_pm1(w2);
      v3 = uniform_pm1(w3);
    }
    r0[g] = (ADD_X ? x0[g] : 0.0f) + scale * v0;
    r1[g] = (ADD_X ? x1[g] : 0.0f) + scale * v1;
    r2[g] = (ADD_X ? x2[g] : 0.0f) + scale * v2;
    r3[g] = (ADD_X ? x3[g] : 0.0f) + scale * v3;
  }
  // tail groups: the last slice is partly outside [0, D)
  NoiseParams p{TYPE, scale, 0, 0};
  for (int64_t g = full; g < G; ++g) {
    const U32x4 r = philox4x32_10(static_cast<uint32_t>(g), s_lo, s_hi, stream, k0, k1);
    float v[4];
    continuous4(p, r, v);
    for (int k = 0; k < 4; ++k) {
      const int64_t j = k * G + g;
      if (j < D) row[j] = (ADD_X ? x[j] : 0.0f) + v[k];
    }
  }
}

// The row kernel twice: for the baseline ISA and for AVX2 (8 lanes instead of 4), picked at run time.
// No FMA in either (AVX2 alone does not enable it), so both produce bit-identical samples.
template <int TYPE, bool ADD_X>
void continuous_row_base(const float* x, int64_t D, float* row, uint64_t seed, uint32_t stream, uint64_t sample,
                         float scale) {
  continuous_row_body<TYPE, ADD_X>(x, D, row, seed, stream, sample, scale);
}

#ifdef FASTCERT_X86_DISPATCH
template <int TYPE, bool ADD_X>
__attribute__((target("avx2"))) void continuous_row_avx2(const float* x, int64_t D, float* row, uint64_t seed,
                                                         uint32_t stream, uint64_t sample, float scale) {
  continuous_row_body<TYPE, ADD_X>(x, D, row, seed, stream, sample, scale);
}
static const bool kHaveAvx2 = __builtin_cpu_supports("avx2");
#endif

template <int TYPE, bool ADD_X>
void continuous_row(const float* x, int64_t D, float* row, uint64_t seed, uint32_t stream, uint64_t sample,
                    float scale) {
#ifdef FASTCERT_X86_DISPATCH
  if (kHaveAvx2) {
    continuous_row_avx2<TYPE, ADD_X>(x, D, row, seed, stream, sample, scale);
    return;
  }
#endif
  continuous_row_base<TYPE, ADD_X>(x, D, row, seed, stream, sample, scale);
}

template <bool ADD_X>
void discrete_row(const float* x, int64_t D, float* row, uint64_t seed, uint32_t stream, uint64_t sample,
                  const NoiseParams& p) {
  const float invK = 1.0f / static_cast<float>(p.K);
  for (int64_t j = 0; j < D; ++j) {
    const U32x4 r = noise_words(seed, stream, sample, static_cast<uint32_t>(j));
    const uint32_t lvl = ADD_X ? level_of(x[j], p.K) : 0u;
    const uint32_t nl = discrete1(p, r, lvl);
    // noise_only for discrete noise reports the level shift relative to level 0
    row[j] = static_cast<float>(nl) * invK;
  }
}

template <bool ADD_X>
void sample_impl(const float* x, int64_t D, float* out, int64_t B, uint64_t seed, uint32_t stream,
                 uint64_t start, const NoiseParams& p) {
  // Below ~64k numbers a parallel region costs more than it saves (thread wake-up, and busy-waiting
  // threads that compete with the model's own threads on a small machine): run those serially.
#pragma omp parallel for schedule(static) if (B * D >= kParallelMinWork)
  for (int64_t s = 0; s < B; ++s) {
    float* row = out + s * D;
    const uint64_t sample = start + static_cast<uint64_t>(s);
    switch (p.type) {
      case kGaussian: continuous_row<kGaussian, ADD_X>(x, D, row, seed, stream, sample, p.scale); break;
      case kLaplace: continuous_row<kLaplace, ADD_X>(x, D, row, seed, stream, sample, p.scale); break;
      case kUniform: continuous_row<kUniform, ADD_X>(x, D, row, seed, stream, sample, p.scale); break;
      default: discrete_row<ADD_X>(x, D, row, seed, stream, sample, p); break;
    }
  }
}

}  // namespace

void sample_noise_cpu(const float* x, int64_t D, float* out, int64_t B, uint64_t seed, uint32_t stream,
                      uint64_t start, const NoiseParams& p) {
  sample_impl<true>(x, D, out, B, seed, stream, start, p);
}

void noise_only_cpu(int64_t D, float* out, int64_t B, uint64_t seed, uint32_t stream, uint64_t start,
                    const NoiseParams& p) {
  sample_impl<false>(nullptr, D, out, B, seed, stream, start, p);
}

namespace {
template <typename T>
inline bool row_argmax(const T* row, int64_t C, int64_t& best) {
  best = 0;
  T bv = row[0];
  bool nan = std::isnan(bv);
  for (int64_t c = 1; c < C; ++c) {
    const T v = row[c];
    nan |= std::isnan(v);
    if (v > bv) {  // strict: ties stay with the lower index
      bv = v;
      best = c;
    }
  }
  return nan;
}
}  // namespace

template <typename T>
int64_t count_argmax_cpu(const T* logits, int64_t B, int64_t C, int64_t* counts) {
  return count_argmax_conf_cpu<T>(logits, B, C, counts, -1, nullptr, nullptr);
}

template <typename T>
int64_t count_argmax_conf_cpu(const T* logits, int64_t B, int64_t C, int64_t* counts, int64_t cls,
                              float* score, float* margin) {
  int64_t nan_rows = 0;
  const int nt = max_threads();
  std::vector<int64_t> local(static_cast<size_t>(nt) * static_cast<size_t>(C), 0);
#pragma omp parallel reduction(+ : nan_rows) if (B * C >= kParallelMinWork)
  {
#ifdef FASTCERT_OPENMP
    const int tid = omp_get_thread_num();
#else
    const int tid = 0;
#endif
    int64_t* mine = local.data() + static_cast<size_t>(tid) * static_cast<size_t>(C);
#pragma omp for schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      const T* row = logits + b * C;
      int64_t best;
      if (row_argmax(row, C, best)) {
        ++nan_rows;
        if (score) score[b] = std::nanf("");
        if (margin) margin[b] = std::nanf("");
        continue;
      }
      ++mine[best];
      if (cls >= 0 && (score || margin)) {
        // softmax in double, stable: probabilities of cls and of the best other class
        const double mx = static_cast<double>(row[best]);
        double z = 0.0;
        for (int64_t c = 0; c < C; ++c) z += std::exp(static_cast<double>(row[c]) - mx);
        double other = -INFINITY;
        for (int64_t c = 0; c < C; ++c)
          if (c != cls) other = std::max(other, static_cast<double>(row[c]));
        const double pc = std::exp(static_cast<double>(row[cls]) - mx) / z;
        const double po = C > 1 ? std::exp(other - mx) / z : 0.0;
        if (score) score[b] = static_cast<float>(pc);
        if (margin) margin[b] = static_cast<float>(pc - po);
      }
    }
  }
  for (int t = 0; t < nt; ++t)
    for (int64_t c = 0; c < C; ++c) counts[c] += local[static_cast<size_t>(t) * static_cast<size_t>(C) + c];
  return nan_rows;
}

template int64_t count_argmax_cpu<float>(const float*, int64_t, int64_t, int64_t*);
template int64_t count_argmax_cpu<double>(const double*, int64_t, int64_t, int64_t*);
template int64_t count_argmax_conf_cpu<float>(const float*, int64_t, int64_t, int64_t*, int64_t, float*, float*);
template int64_t count_argmax_conf_cpu<double>(const double*, int64_t, int64_t, int64_t*, int64_t, float*,
                                               float*);

}  // namespace fastcert
