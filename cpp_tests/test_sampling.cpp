// CPU sampling/counting kernels: every coordinate written exactly once for any D (tail groups),
// chunked sampling equals one-shot sampling, moments are right, argmax ties go to the lower index.
#include <cmath>
#include <cstdio>
#include <limits>
#include <vector>

#include "expect.h"
#include "sampling/sampling.h"

using namespace fastcert;


int main() {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (int type = kGaussian; type <= kDiscrete; ++type) {
    for (int64_t D : {1, 2, 3, 4, 5, 7, 8, 9, 63, 64, 65, 784}) {
      const int64_t B = 6;
      std::vector<float> x(D), out(B * D + 8, nan), chunk(B * D, nan);
      for (int64_t j = 0; j < D; ++j) x[j] = static_cast<float>(j % 5) / 4.0f;
      NoiseParams p{type, 0.5f, (uint64_t(1) << 63), 4};
      sample_noise_cpu(x.data(), D, out.data(), B, 99, 1, 10, p);
      for (int64_t i = 0; i < B * D; ++i) EXPECT(std::isfinite(out[i]));
      for (int64_t i = B * D; i < B * D + 8; ++i) EXPECT(std::isnan(out[i]));  // nothing written past the end
      for (int64_t s = 0; s < B; s += 4) {
        const int64_t b = std::min<int64_t>(4, B - s);
        sample_noise_cpu(x.data(), D, chunk.data() + s * D, b, 99, 1, 10 + s, p);
      }
      for (int64_t i = 0; i < B * D; ++i) EXPECT(chunk[i] == out[i]);
      if (type == kUniform)
        for (int64_t i = 0; i < B * D; ++i) EXPECT(std::fabs(out[i] - x[i % D]) <= 0.5f);
      if (type == kDiscrete)
        for (int64_t i = 0; i < B * D; ++i) {
          const float l = out[i] * 4.0f;
          EXPECT(std::fabs(l - std::round(l)) < 1e-5f && l >= 0.0f && l <= 4.0f);
        }
    }
  }
  // Gaussian moments over many samples
  {
    const int64_t B = 2000, D = 101;
    std::vector<float> out(B * D);
    NoiseParams p{kGaussian, 2.0f, 0, 0};
    noise_only_cpu(D, out.data(), B, 5, 0, 0, p);
    double m = 0, v = 0;
    for (float z : out) m += z;
    m /= out.size();
    for (float z : out) v += (z - m) * (z - m);
    v /= out.size();
    EXPECT(std::fabs(m) < 0.03);
    EXPECT(std::fabs(v - 4.0) < 0.06);
  }
  // counting: ties -> lower index; NaN rows reported
  {
    std::vector<float> logits = {1, 1, 0, 0, 2, 2, 3, 1, 1, nan, 0, 0};
    std::vector<int64_t> counts(3, 0);
    const int64_t nan_rows = count_argmax_cpu<float>(logits.data(), 4, 3, counts.data());
    EXPECT(nan_rows == 1);
    EXPECT(counts[0] == 2 && counts[1] == 1 && counts[2] == 0);
  }
  if (failures) {
    std::fprintf(stderr, "%d failures\n", failures);
    return 1;
  }
  std::printf("test_sampling: all passed\n");
  return 0;
}
