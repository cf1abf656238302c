// Fused interval ReLU and CROWN backward kernels (see ibp_kernels.h). The inner loops are written branch-free so that GCC
// vectorizes them (compare + blend, omp simd reductions); the functions are compiled for AVX-512, AVX2 and
// baseline x86-64 with runtime dispatch. Memory traffic is the cost: the ReLU step reads and writes Lambda
// once (torch needs a compare, a select, a multiply, a clamp and a product: about 5 reads and 3 writes).
#include "ibp/ibp_kernels.h"
#include "common/clones.h"

#include <cmath>

#ifdef FASTCERT_OPENMP
#include <omp.h>
#endif


namespace fastcert {
namespace {

// Chunk of a row summed in T lanes before it is added to the double total: short enough that float
// partial sums lose nothing that matters next to the double total, long enough to vectorize.
constexpr int64_t kChunk = 512;

template <typename T>
FASTCERT_CLONES double relu_row(T* __restrict lam, const T* __restrict al, const T* __restrict au,
                                const T* __restrict t, int64_t F) {
  double total = 0.0;
  for (int64_t c0 = 0; c0 < F; c0 += kChunk) {
    const int64_t c1 = c0 + kChunk < F ? c0 + kChunk : F;
    T s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t f = c0; f < c1; ++f) {
      const T v = lam[f];
      const T w = v * (v >= T(0) ? al[f] : au[f]);
      lam[f] = w;
      s += (w >= T(0) ? T(0) : w) * t[f];  // NaN enters the sum, as with torch's clamp
    }
    total += double(s);
  }
  return total;
}

template <typename T>
FASTCERT_CLONES void concretize_row(const T* __restrict lam, const T* __restrict c, const T* __restrict r,
                                    const T* __restrict x, int64_t F, int dual, double* out) {
  double dc = 0, dr = 0, dx = 0, dd = 0;
  for (int64_t c0 = 0; c0 < F; c0 += kChunk) {
    const int64_t c1 = c0 + kChunk < F ? c0 + kChunk : F;
    T sc = 0, sr = 0;
#pragma omp simd reduction(+ : sc, sr)
    for (int64_t f = c0; f < c1; ++f) {
      const T v = lam[f];
      sc += v * c[f];
      sr += std::fabs(v) * r[f];
    }
    dc += double(sc);
    dr += double(sr);
    if (x != nullptr) {
      T sx = 0;
#pragma omp simd reduction(+ : sx)
      for (int64_t f = c0; f < c1; ++f) sx += lam[f] * x[f];
      dx += double(sx);
    }
    if (dual == 1) {
      T sq = 0;
#pragma omp simd reduction(+ : sq)
      for (int64_t f = c0; f < c1; ++f) sq += lam[f] * lam[f];
      dd += double(sq);
    } else if (dual == 2) {
      T m = 0;
#pragma omp simd reduction(max : m)
      for (int64_t f = c0; f < c1; ++f) {
        const T a = std::fabs(lam[f]);
        m = a > m ? a : m;
      }
      dd = double(m) > dd ? double(m) : dd;
    }
  }
  out[0] = dc;
  out[1] = dr;
  out[2] = dx;
  out[3] = dd;
}

int pick_threads(int threads) {
#ifdef FASTCERT_OPENMP
  constexpr int kMaxThreads = 1024;  // fastcert._native.MAX_KERNEL_THREADS
  return threads > 0 ? (threads < kMaxThreads ? threads : kMaxThreads) : omp_get_max_threads();
#else
  (void)threads;
  return 1;
#endif
}

// One block of the interval ReLU. No __restrict: the outputs may be the inputs (each entry is read before
// it is written, at the same index).
template <typename T>
FASTCERT_CLONES void interval_relu_block(const T* c, const T* r, T* c_out, T* r_out, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const T a = c[i] - r[i], b = c[i] + r[i];
    const T lo = a < T(0) ? T(0) : a;  // NaN stays NaN, as torch's clamp
    const T hi = b < T(0) ? T(0) : b;
    c_out[i] = (hi + lo) * T(0.5);
    r_out[i] = (hi - lo) * T(0.5);
  }
}

// fn(i) for i in [0, n), split statically over the threads (serial for a single item); each i is done by one
// thread, so results do not depend on the thread count.
template <typename Fn>
void parallel_items(int64_t n, int threads, Fn&& fn) {
  const int nt = pick_threads(threads);
  (void)nt;
#pragma omp parallel for schedule(static) num_threads(nt) if (n > 1)
  for (int64_t i = 0; i < n; ++i) fn(i);
}

template <typename T>
void interval_relu(const T* c, const T* r, T* c_out, T* r_out, int64_t n, int threads) {
  constexpr int64_t kBlock = 16384;
  parallel_items((n + kBlock - 1) / kBlock, threads, [&](int64_t j) {
    const int64_t i0 = j * kBlock, len = n - i0 < kBlock ? n - i0 : kBlock;
    interval_relu_block(c + i0, r + i0, c_out + i0, r_out + i0, len);
  });
}

template <typename T>
void relu_back(T* lam, const T* al, const T* au, const T* t, T* bias, int64_t B, int64_t K, int64_t F, int threads) {
  parallel_items(B * K, threads, [&](int64_t i) {
    const int64_t b = i / K;
    bias[i] = T(double(bias[i]) + relu_row(lam + i * F, al + b * F, au + b * F, t + b * F, F));
  });
}

template <typename T>
void concretize(const T* lam, const T* c, const T* r, const T* x, int64_t B, int64_t K, int64_t F, int dual,
                double* out, int threads) {
  parallel_items(B * K, threads, [&](int64_t i) {
    const int64_t b = i / K;
    concretize_row(lam + i * F, c + b * F, r + b * F, x == nullptr ? nullptr : x + b * F, F, dual, out + 4 * i);
  });
}

}  // namespace

void interval_relu_f32(const float* c, const float* r, float* c_out, float* r_out, int64_t n, int threads) {
  interval_relu(c, r, c_out, r_out, n, threads);
}
void interval_relu_f64(const double* c, const double* r, double* c_out, double* r_out, int64_t n, int threads) {
  interval_relu(c, r, c_out, r_out, n, threads);
}
void crown_relu_back_f32(float* lam, const float* a_l, const float* a_u, const float* t, float* bias, int64_t B,
                         int64_t K, int64_t F, int threads) {
  relu_back(lam, a_l, a_u, t, bias, B, K, F, threads);
}
void crown_relu_back_f64(double* lam, const double* a_l, const double* a_u, const double* t, double* bias,
                         int64_t B, int64_t K, int64_t F, int threads) {
  relu_back(lam, a_l, a_u, t, bias, B, K, F, threads);
}
void crown_concretize_f32(const float* lam, const float* c, const float* r, const float* x, int64_t B, int64_t K,
                          int64_t F, int dual, double* out, int threads) {
  concretize(lam, c, r, x, B, K, F, dual, out, threads);
}
void crown_concretize_f64(const double* lam, const double* c, const double* r, const double* x, int64_t B,
                          int64_t K, int64_t F, int dual, double* out, int threads) {
  concretize(lam, c, r, x, B, K, F, dual, out, threads);
}

}  // namespace fastcert
