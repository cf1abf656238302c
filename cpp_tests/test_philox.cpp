// Known-answer tests of Philox 4x32-10 (Random123's published vectors) and accuracy of the float
// polynomials used by the sampling kernels against the C library.
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "common/philox.h"
#include "expect.h"
#include "sampling/noise_math.h"

using namespace fastcert;


static void kat(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1, uint32_t e0,
                uint32_t e1, uint32_t e2, uint32_t e3) {
  U32x4 r = philox4x32_10(c0, c1, c2, c3, k0, k1);
  if (!(r.v[0] == e0 && r.v[1] == e1 && r.v[2] == e2 && r.v[3] == e3)) {
    std::fprintf(stderr, "KAT mismatch: got %08x %08x %08x %08x\n", r.v[0], r.v[1], r.v[2], r.v[3]);
    ++failures;
  }
}

int main() {
  kat(0, 0, 0, 0, 0, 0, 0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u);
  kat(0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0x408f276du, 0x41c83b0eu,
      0xa20bc7c6u, 0x6d5451fdu);
  kat(0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u, 0xa4093822u, 0x299f31d0u, 0xd16cfe09u, 0x94fdccebu,
      0x5001e420u, 0x24126ea1u);

  // log on (0, 1]: relative error below 2e-7 over a sweep of magnitudes
  double worst = 0;
  for (int i = 1; i <= 200000; ++i) {
    const float x = static_cast<float>(std::pow(2.0, -33.0 * i / 200000.0));
    const double want = std::log(static_cast<double>(x));
    const double got = fc_logf(x);
    const double err = std::fabs(got - want) / std::max(1e-30, std::fabs(want));
    if (want != 0.0 && err > worst) worst = err;
  }
  std::printf("fc_logf worst relative error %.3g\n", worst);
  EXPECT(worst < 3e-7);
  EXPECT(fc_logf(1.0f) == 0.0f);

  // sin/cos of a full turn: absolute error below 3e-7
  double ws = 0;
  for (uint64_t w = 0; w < (1ull << 32); w += 65537) {
    float s, c;
    fc_sincos_turn(static_cast<uint32_t>(w), s, c);
    const double a = 2.0 * M_PI * static_cast<double>(w) / 4294967296.0;
    ws = std::max(ws, std::max(std::fabs(s - std::sin(a)), std::fabs(c - std::cos(a))));
  }
  std::printf("fc_sincos_turn worst absolute error %.3g\n", ws);
  EXPECT(ws < 3e-7);

  // open_unit never returns 0 and never exceeds 1
  EXPECT(open_unit(0u) > 0.0f);
  EXPECT(open_unit(0xffffffffu) <= 1.0f);

  // discrete: K = 1 always flips when not kept; levels stay on {0..K}
  NoiseParams p{kDiscrete, 0.f, 0, 255};
  for (uint32_t g = 0; g < 10000; ++g) {
    const U32x4 r = noise_words(7, 0, 3, g);
    const uint32_t nl = discrete1(p, r, g % 256);
    EXPECT(nl <= 255u && nl != g % 256);
  }
  NoiseParams p1{kDiscrete, 0.f, 0, 1};
  for (uint32_t g = 0; g < 1000; ++g) EXPECT(discrete1(p1, noise_words(1, 0, 0, g), 0) == 1u);

  if (failures) {
    std::fprintf(stderr, "%d failures\n", failures);
    return 1;
  }
  std::printf("test_philox: all passed\n");
  return 0;
}
