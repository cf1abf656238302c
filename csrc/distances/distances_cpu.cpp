// Blocked nearest-neighbour kernel behind fastcert.class_distances (see distances.h for the contract).
//
// Layout of the work: queries are cut into blocks of kQueryBlock rows, one OpenMP task each; a task
// walks the reference set in blocks of kRefBlock rows and, for every query of its block, scans the
// reference block in increasing index order. A reference block is reused by all queries of the task
// while it sits in L2, and the query rows stay in L1. The innermost loops are written so that GCC
// vectorizes them (psadbw / pmaddwd / pmaxub for uint8; omp simd reductions for double), and the block
// functions are compiled for AVX-512BW, AVX2 and baseline x86-64 with runtime dispatch (target_clones),
// so one binary runs everywhere and uses the widest units present.
#include "distances/distances.h"
#include "common/clones.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <vector>

#ifdef FASTCERT_OPENMP
#include <omp.h>
#endif


namespace fastcert {
namespace {

// Why these sizes: 16 queries x 784 bytes (Fashion-MNIST) = 12 KiB fits L1 next to the streamed
// reference row; 256 references x 784 bytes = 196 KiB (1.5 MiB as double) is reused 16 times from L2/L3.
constexpr int64_t kQueryBlock = 16;
constexpr int64_t kRefBlock = 256;
// Integer chunk: 2^15 elements keep a uint32 sum of squared uint8 differences (<= 65025 each) below 2^32.
constexpr int64_t kChunk = int64_t(1) << 15;

template <int NORM>
FASTCERT_INLINE uint64_t dist_u8(const uint8_t* __restrict a, const uint8_t* __restrict b, int64_t d) {
  if (NORM == kDistLinf) {
    uint8_t m = 0;
    for (int64_t i = 0; i < d; ++i) {
      const uint8_t x = a[i], y = b[i];
      const uint8_t t = x > y ? uint8_t(x - y) : uint8_t(y - x);
      m = t > m ? t : m;
    }
    return m;
  }
  uint64_t total = 0;
  for (int64_t c0 = 0; c0 < d; c0 += kChunk) {
    const int64_t c1 = std::min(d, c0 + kChunk);
    uint32_t s = 0;
    if (NORM == kDistL1) {
      for (int64_t i = c0; i < c1; ++i) s += uint32_t(std::abs(int(a[i]) - int(b[i])));
    } else {
      for (int64_t i = c0; i < c1; ++i) {
        const int t = int(a[i]) - int(b[i]);
        s += uint32_t(t * t);
      }
    }
    total += s;
  }
  return total;
}

template <int NORM>
FASTCERT_INLINE double dist_f64(const double* __restrict a, const double* __restrict b, int64_t d) {
  double s = 0.0;
  if (NORM == kDistL1) {
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < d; ++i) s += std::fabs(a[i] - b[i]);
  } else if (NORM == kDistL2) {
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < d; ++i) {
      const double t = a[i] - b[i];
      s += t * t;
    }
  } else {
#pragma omp simd reduction(max : s)
    for (int64_t i = 0; i < d; ++i) s = std::max(s, std::fabs(a[i] - b[i]));
  }
  return s;
}

template <typename T>
struct Dist;
template <>
struct Dist<uint8_t> {
  using Acc = uint64_t;
  static constexpr Acc kNone = std::numeric_limits<uint64_t>::max();
  template <int NORM>
  static FASTCERT_INLINE Acc eval(const uint8_t* a, const uint8_t* b, int64_t d) { return dist_u8<NORM>(a, b, d); }
  static double to_double(Acc v) { return v == kNone ? std::numeric_limits<double>::infinity() : double(v); }
};
template <>
struct Dist<double> {
  using Acc = double;
  static constexpr Acc kNone = std::numeric_limits<double>::infinity();
  template <int NORM>
  static FASTCERT_INLINE Acc eval(const double* a, const double* b, int64_t d) { return dist_f64<NORM>(a, b, d); }
  static double to_double(Acc v) { return v; }
};

// One task: queries [q0, q1) against all references. Results go straight to the outputs.
template <typename T, int NORM>
FASTCERT_INLINE void query_block(const T* q, int64_t q0, int64_t q1, const T* r, int64_t nr, int64_t d,
                                 const int64_t* qlab, const int64_t* rlab, const int64_t* exclude,
                                 NearestOut out) {
  using D = Dist<T>;
  using Acc = typename D::Acc;
  Acc best_inter[kQueryBlock], best_intra[kQueryBlock];
  int64_t arg_inter[kQueryBlock], arg_intra[kQueryBlock];
  const int64_t nb = q1 - q0;
  for (int64_t k = 0; k < nb; ++k) {
    best_inter[k] = best_intra[k] = D::kNone;
    arg_inter[k] = arg_intra[k] = -1;
  }
  for (int64_t r0 = 0; r0 < nr; r0 += kRefBlock) {
    const int64_t r1 = std::min(nr, r0 + kRefBlock);
    for (int64_t k = 0; k < nb; ++k) {
      const int64_t i = q0 + k;
      const T* qi = q + i * d;
      const int64_t li = qlab[i];
      const int64_t skip = exclude ? exclude[i] : -1;
      Acc bi = best_inter[k], ba = best_intra[k];
      int64_t ai = arg_inter[k], aa = arg_intra[k];
      for (int64_t j = r0; j < r1; ++j) {
        if (j == skip) continue;
        const Acc v = D::template eval<NORM>(qi, r + j * d, d);
        if (rlab[j] == li) {
          if (v < ba || aa < 0) { ba = v; aa = j; }
        } else {
          if (v < bi || ai < 0) { bi = v; ai = j; }
        }
      }
      best_inter[k] = bi; best_intra[k] = ba;
      arg_inter[k] = ai; arg_intra[k] = aa;
    }
  }
  for (int64_t k = 0; k < nb; ++k) {
    const int64_t i = q0 + k;
    out.inter[i] = arg_inter[k] < 0 ? std::numeric_limits<double>::infinity() : D::to_double(best_inter[k]);
    out.intra[i] = arg_intra[k] < 0 ? std::numeric_limits<double>::infinity() : D::to_double(best_intra[k]);
    out.inter_idx[i] = arg_inter[k];
    out.intra_idx[i] = arg_intra[k];
  }
}

// The dispatch points: one clone per ISA, each with the kernels above inlined into it.
#define FASTCERT_DEFINE_BLOCK(NAME, T, NORM)                                                           \
  FASTCERT_CLONES void NAME(const T* q, int64_t q0, int64_t q1, const T* r, int64_t nr, int64_t d,     \
                            const int64_t* qlab, const int64_t* rlab, const int64_t* exclude,         \
                            NearestOut out) {                                                          \
    query_block<T, NORM>(q, q0, q1, r, nr, d, qlab, rlab, exclude, out);                               \
  }
FASTCERT_DEFINE_BLOCK(block_u8_l1, uint8_t, kDistL1)
FASTCERT_DEFINE_BLOCK(block_u8_l2, uint8_t, kDistL2)
FASTCERT_DEFINE_BLOCK(block_u8_linf, uint8_t, kDistLinf)
FASTCERT_DEFINE_BLOCK(block_f64_l1, double, kDistL1)
FASTCERT_DEFINE_BLOCK(block_f64_l2, double, kDistL2)
FASTCERT_DEFINE_BLOCK(block_f64_linf, double, kDistLinf)
#undef FASTCERT_DEFINE_BLOCK

template <typename T, typename BlockFn>
void run_blocks(BlockFn fn, const T* q, int64_t nq, const T* r, int64_t nr, int64_t d, const int64_t* qlab,
                const int64_t* rlab, const int64_t* exclude, NearestOut out) {
  const int64_t nblocks = (nq + kQueryBlock - 1) / kQueryBlock;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t b = 0; b < nblocks; ++b) {
    const int64_t q0 = b * kQueryBlock;
    const int64_t q1 = std::min(nq, q0 + kQueryBlock);
    fn(q, q0, q1, r, nr, d, qlab, rlab, exclude, out);
  }
}

}  // namespace

void nearest_by_label_u8(const uint8_t* q, int64_t nq, const uint8_t* r, int64_t nr, int64_t d,
                         const int64_t* qlab, const int64_t* rlab, const int64_t* exclude, int norm,
                         NearestOut out) {
  if (nq <= 0) return;
  switch (norm) {
    case kDistL1: run_blocks(block_u8_l1, q, nq, r, nr, d, qlab, rlab, exclude, out); break;
    case kDistL2: run_blocks(block_u8_l2, q, nq, r, nr, d, qlab, rlab, exclude, out); break;
    default: run_blocks(block_u8_linf, q, nq, r, nr, d, qlab, rlab, exclude, out); break;
  }
}

void nearest_by_label_f64(const double* q, int64_t nq, const double* r, int64_t nr, int64_t d,
                          const int64_t* qlab, const int64_t* rlab, const int64_t* exclude, int norm,
                          NearestOut out) {
  if (nq <= 0) return;
  switch (norm) {
    case kDistL1: run_blocks(block_f64_l1, q, nq, r, nr, d, qlab, rlab, exclude, out); break;
    case kDistL2: run_blocks(block_f64_l2, q, nq, r, nr, d, qlab, rlab, exclude, out); break;
    default: run_blocks(block_f64_linf, q, nq, r, nr, d, qlab, rlab, exclude, out); break;
  }
}

double pair_distance_u8(const uint8_t* a, const uint8_t* b, int64_t d, int norm) {
  double s = 0.0;
  for (int64_t i = 0; i < d; ++i) {
    const double t = std::fabs(double(a[i]) - double(b[i]));
    if (norm == kDistL1) s += t;
    else if (norm == kDistL2) s += t * t;
    else s = std::max(s, t);
  }
  return s;
}

double pair_distance_f64(const double* a, const double* b, int64_t d, int norm) {
  double s = 0.0;
  for (int64_t i = 0; i < d; ++i) {
    const double t = std::fabs(a[i] - b[i]);
    if (norm == kDistL1) s += t;
    else if (norm == kDistL2) s += t * t;
    else s = std::max(s, t);
  }
  return s;
}

int distances_max_threads() {
#ifdef FASTCERT_OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

}  // namespace fastcert
