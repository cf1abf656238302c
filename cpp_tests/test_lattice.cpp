// Lattice sampler (sound smoothing): inversion against the threshold table is exact (the frequency of
// each offset equals the table's cell width up to sampling error), chunked sampling equals one-shot
// sampling, every coordinate is written once for odd and even D, and the output is (base + J) / denom.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <limits>
#include <vector>

#include "expect.h"
#include "lattice/lattice.h"

using namespace fastcert;

int main() {
  // three boundaries splitting [0, 2^64) into four cells of 1/8, 3/8, 1/4, 1/4 -> J in {-1, 0, 1, 2}
  const uint64_t q = uint64_t(1) << 61;  // 2^64 / 8
  const std::vector<uint64_t> thr = {q, 4 * q, 6 * q};
  const double want[4] = {0.125, 0.375, 0.25, 0.25};
  for (int64_t D : {1, 2, 3, 7, 64}) {
    const int64_t B = 5;
    std::vector<int64_t> off(B * D, std::numeric_limits<int64_t>::min()), chunk(B * D, 0);
    lattice_offsets_cpu(D, off.data(), B, 42, 1, 100, thr.data(), 3, -1);
    for (int64_t i = 0; i < B * D; ++i) EXPECT(off[i] >= -1 && off[i] <= 2);
    for (int64_t s = 0; s < B; s += 2) {
      const int64_t b = std::min<int64_t>(2, B - s);
      lattice_offsets_cpu(D, chunk.data() + s * D, b, 42, 1, 100 + s, thr.data(), 3, -1);
    }
    for (int64_t i = 0; i < B * D; ++i) EXPECT(chunk[i] == off[i]);
    std::vector<int64_t> base(D);
    for (int64_t j = 0; j < D; ++j) base[j] = 3 * j;
    std::vector<float> out(B * D + 4, std::numeric_limits<float>::quiet_NaN());
    lattice_sample_cpu(base.data(), D, out.data(), B, 42, 1, 100, thr.data(), 3, -1, 7);
    for (int64_t i = 0; i < B * D; ++i)
      EXPECT(out[i] == static_cast<float>(static_cast<double>(base[i % D] + off[i]) / 7.0));
    for (int64_t i = B * D; i < B * D + 4; ++i) EXPECT(std::isnan(out[i]));  // nothing past the end
  }
  // frequencies: 200,000 draws, each cell within 5 standard deviations
  {
    const int64_t B = 2000, D = 100;
    std::vector<int64_t> off(B * D);
    lattice_offsets_cpu(D, off.data(), B, 7, 0, 0, thr.data(), 3, -1);
    double cnt[4] = {0, 0, 0, 0};
    for (int64_t v : off) cnt[v + 1] += 1;
    const double n = static_cast<double>(B * D);
    for (int c = 0; c < 4; ++c) EXPECT(std::fabs(cnt[c] / n - want[c]) < 5 * std::sqrt(want[c] * (1 - want[c]) / n));
  }
  // degenerate tables: all thresholds 0 -> J = j_min + N; all at the top -> J = j_min (bar U = 2^64 - 1)
  {
    const std::vector<uint64_t> zeros = {0, 0, 0, 0};
    const std::vector<uint64_t> tops(4, std::numeric_limits<uint64_t>::max());
    std::vector<int64_t> off(3 * 9);
    lattice_offsets_cpu(9, off.data(), 3, 1, 0, 0, zeros.data(), 4, 10);
    for (int64_t v : off) EXPECT(v == 14);
    lattice_offsets_cpu(9, off.data(), 3, 1, 0, 0, tops.data(), 4, 10);
    for (int64_t v : off) EXPECT(v == 10);
  }
  if (failures) std::fprintf(stderr, "%d failures\n", failures);
  return failures ? 1 : 0;
}
