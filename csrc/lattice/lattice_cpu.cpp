// CPU (OpenMP) lattice sampler: plain loop, one 64-bit uniform per (sample, coordinate), inversion by a
// guide table over the top bits of the uniform followed by a binary search inside the bucket.
#include "lattice/lattice.h"

#include <cstddef>
#include <vector>

#include "common/philox.h"

namespace fastcert {
namespace {

constexpr int64_t kParallelMinWork = 1 << 16;  // below this a parallel region costs more than it saves

// guide[b] = #{i : thr[i] <= b << shift} for b in [0, 2^bits); guide[2^bits] = N. For U in bucket b,
// #{i : thr[i] <= U} lies in [guide[b], guide[b + 1]] because thr is non-decreasing.
std::vector<int32_t> build_guide(const uint64_t* thr, int64_t N) {
  const int64_t nb = int64_t(1) << kLatticeGuideBits;
  const int shift = 64 - kLatticeGuideBits;
  std::vector<int32_t> guide(static_cast<size_t>(nb + 1));
  int64_t i = 0;
  for (int64_t b = 0; b < nb; ++b) {
    const uint64_t lo = static_cast<uint64_t>(b) << shift;
    while (i < N && thr[i] <= lo) ++i;
    guide[static_cast<size_t>(b)] = static_cast<int32_t>(i);
  }
  guide[static_cast<size_t>(nb)] = static_cast<int32_t>(N);
  return guide;
}

inline int64_t invert(uint64_t u, const uint64_t* thr, const int32_t* guide) {
  const uint64_t b = u >> (64 - kLatticeGuideBits);
  int64_t lo = guide[b], hi = guide[b + 1];
  while (lo < hi) {  // first index in [lo, hi) with thr > u
    const int64_t mid = lo + ((hi - lo) >> 1);
    if (thr[mid] <= u)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

template <typename Emit>
void lattice_impl(int64_t D, int64_t B, uint64_t seed, uint32_t stream, uint64_t start, const uint64_t* thr,
                  int64_t N, Emit emit) {
  const std::vector<int32_t> guide = build_guide(thr, N);
  const int32_t* gp = guide.data();
  const uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  const int64_t G = (D + 1) / 2;
#pragma omp parallel for schedule(static) if (B * D >= kParallelMinWork)
  for (int64_t s = 0; s < B; ++s) {
    const uint64_t sample = start + static_cast<uint64_t>(s);
    const uint32_t s_lo = static_cast<uint32_t>(sample), s_hi = static_cast<uint32_t>(sample >> 32);
    for (int64_t g = 0; g < G; ++g) {
      const U32x4 r = philox4x32_10(static_cast<uint32_t>(g), s_lo, s_hi, stream, k0, k1);
      const uint64_t u0 = (static_cast<uint64_t>(r.v[0]) << 32) | r.v[1];
      const uint64_t u1 = (static_cast<uint64_t>(r.v[2]) << 32) | r.v[3];
      const int64_t j = 2 * g;
      emit(s, j, invert(u0, thr, gp));
      if (j + 1 < D) emit(s, j + 1, invert(u1, thr, gp));
    }
  }
}

}  // namespace

void lattice_sample_cpu(const int64_t* base, int64_t D, float* out, int64_t B, uint64_t seed, uint32_t stream,
                        uint64_t start, const uint64_t* thr, int64_t N, int64_t j_min, int64_t denom) {
  const double dd = static_cast<double>(denom);
  lattice_impl(D, B, seed, stream, start, thr, N, [=](int64_t s, int64_t j, int64_t idx) {
    const int64_t z = base[j] + j_min + idx;  // exact integer lattice coordinate
    out[s * D + j] = static_cast<float>(static_cast<double>(z) / dd);
  });
}

void lattice_offsets_cpu(int64_t D, int64_t* out, int64_t B, uint64_t seed, uint32_t stream, uint64_t start,
                         const uint64_t* thr, int64_t N, int64_t j_min) {
  lattice_impl(D, B, seed, stream, start, thr, N,
               [=](int64_t s, int64_t j, int64_t idx) { out[s * D + j] = j_min + idx; });
}

}  // namespace fastcert
