// Noise generation shared by the CPU and CUDA sampling kernels.
//
// Stream definition (part of fastcert's reproducibility contract):
//   key     = seed (64 bits: k0 = low word, k1 = high word)
//   counter = (group g, sample index low word, sample index high word, stream tag)
// For the continuous noises (Gaussian, Laplace, uniform) one Philox call feeds one *group* g of four
// coordinates, laid out in four contiguous slices: word k of group g goes to coordinate k * G + g with
// G = ceil(D / 4). That layout keeps every store unit-stride, so the CPU loop vectorizes.
// For discrete noise one Philox call feeds one coordinate (64 bits for the keep decision, 64 for the
// replacement level) so that both are exact to 2^-64.
//
// The transcendental functions are our own float polynomials (Cephes minimax coefficients), written
// so that gcc vectorizes them and nvcc runs the very same arithmetic.
#pragma once
#include <cstdint>
#include <cmath>
#include <cstring>

#include "common/host_device.h"
#include "common/philox.h"

namespace fastcert {

enum NoiseType : int { kGaussian = 0, kLaplace = 1, kUniform = 2, kDiscrete = 3 };

FASTCERT_HOST_DEVICE float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
FASTCERT_HOST_DEVICE uint32_t float_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

// Branch-free select on the bit patterns (mask all-ones or zero): keeps the loops straight-line so
// that gcc vectorizes them; on the GPU it is a couple of integer instructions.
FASTCERT_HOST_DEVICE float select_bits(uint32_t mask, float a, float b) {
  return bits_to_float((float_to_bits(a) & mask) | (float_to_bits(b) & ~mask));
}

// Natural log for normal positive floats (all our callers pass (0, 1]); max error ~1 ulp.
FASTCERT_HOST_DEVICE float fc_logf(float x) {
  const uint32_t bits = float_to_bits(x);
  const int32_t e0 = static_cast<int32_t>((bits >> 23) & 0xffu) - 126;  // x = m * 2^e, m in [0.5, 1)
  const float m0 = bits_to_float((bits & 0x807fffffu) | 0x3f000000u);
  // m < sqrt(1/2): use 2m - 1 and e - 1, else m - 1 (m ends in [sqrt(1/2) - 1, sqrt(2) - 1))
  const uint32_t small = 0u - static_cast<uint32_t>(m0 < 0.707106781186547524f);
  const int32_t e = e0 - static_cast<int32_t>(small & 1u);
  const float m = select_bits(small, m0 + m0 - 1.0f, m0 - 1.0f);
  const float z = m * m;
  float y = 7.0376836292E-2f;
  y = y * m - 1.1514610310E-1f;
  y = y * m + 1.1676998740E-1f;
  y = y * m - 1.2420140846E-1f;
  y = y * m + 1.4249322787E-1f;
  y = y * m - 1.6668057665E-1f;
  y = y * m + 2.0000714765E-1f;
  y = y * m - 2.4999993993E-1f;
  y = y * m + 3.3333331174E-1f;
  y = y * m * z;
  const float fe = static_cast<float>(e);
  y += -2.12194440E-4f * fe;  // ln 2 split in two parts for accuracy
  y += -0.5f * z;
  return m + y + 0.693359375f * fe;
}

// sin and cos of 2*pi*w/2^32 for a 32-bit word w. The range reduction is exact integer arithmetic:
// w is split into the nearest quarter turn j and a remainder f in [-2^29, 2^29) (|angle| <= pi/4).
FASTCERT_HOST_DEVICE void fc_sincos_turn(uint32_t w, float& s_out, float& c_out) {
  const uint32_t j = ((w + (1u << 29)) >> 30) & 3u;
  const int32_t f = static_cast<int32_t>(w - (j << 30));
  const float x = static_cast<float>(f) * 1.46291807926715968e-09f;  // 2*pi / 2^32
  const float z = x * x;
  const float s = x + x * z * (-1.6666654611E-1f + z * (8.3321608736E-3f + z * -1.9515295891E-4f));
  const float c = 1.0f - 0.5f * z +
                  z * z * (4.166664568298827E-2f + z * (-1.388731625493765E-3f + z * 2.443315711809948E-5f));
  // rotate by j quarter turns: odd j swaps sin and cos; the signs follow the quadrant
  const uint32_t swap = 0u - (j & 1u);
  const uint32_t s_neg = (j >> 1) << 31;               // j = 2, 3: sin negated
  const uint32_t c_neg = ((j ^ (j >> 1)) & 1u) << 31;  // j = 1, 2: cos negated
  s_out = bits_to_float(float_to_bits(select_bits(swap, c, s)) ^ s_neg);
  c_out = bits_to_float(float_to_bits(select_bits(swap, s, c)) ^ c_neg);
}

// uniform in (0, 1): (w + 1/2) / 2^32, never 0 (so log is finite); rounding to float can give 1.
FASTCERT_HOST_DEVICE float open_unit(uint32_t w) {
  return static_cast<float>(w) * 2.3283064365386963e-10f + 1.1641532182693481e-10f;
}

// Two standard normals from two words (one Box-Muller pair), scalar in and out.
FASTCERT_HOST_DEVICE void box_muller(uint32_t w_radius, uint32_t w_angle, float& z0, float& z1) {
  float s, c;
  const float r = sqrtf(-2.0f * fc_logf(open_unit(w_radius)));
  fc_sincos_turn(w_angle, s, c);
  z0 = r * c;
  z1 = r * s;
}

// Four standard normals from four words (two Box-Muller pairs).
FASTCERT_HOST_DEVICE void gaussian4(const U32x4& r, float out[4]) {
  float s, c;
  const float r0 = sqrtf(-2.0f * fc_logf(open_unit(r.v[0])));
  fc_sincos_turn(r.v[1], s, c);
  out[0] = r0 * c;
  out[1] = r0 * s;
  const float r1 = sqrtf(-2.0f * fc_logf(open_unit(r.v[2])));
  fc_sincos_turn(r.v[3], s, c);
  out[2] = r1 * c;
  out[3] = r1 * s;
}

// Standard Laplace (density exp(-|t|)/2): sign from the top bit, Exp(1) magnitude from 31 bits.
FASTCERT_HOST_DEVICE float laplace1(uint32_t w) {
  const float u = static_cast<float>(w & 0x7fffffffu) * 4.6566128730773926e-10f + 2.3283064365386963e-10f;
  const float mag = -fc_logf(u);
  return bits_to_float(float_to_bits(mag) ^ (w & 0x80000000u));
}

// Uniform on (-1, 1) from the top 24 bits (exactly representable, symmetric).
FASTCERT_HOST_DEVICE float uniform_pm1(uint32_t w) {
  const float u = (static_cast<float>(w >> 8) + 0.5f) * 5.9604644775390625e-08f;  // (0, 1)
  return 2.0f * u - 1.0f;
}

struct NoiseParams {
  int type;               // NoiseType
  float scale;            // sigma (Gaussian), scale b (Laplace), half-width w (uniform)
  uint64_t keep_thresh;   // discrete: keep when the 64-bit word < keep_thresh (= alpha * 2^64)
  uint32_t K;             // discrete: number of levels - 1 (inputs on {0, 1/K, ..., 1})
};

FASTCERT_HOST_DEVICE U32x4 noise_words(uint64_t seed, uint32_t stream, uint64_t sample, uint32_t group) {
  return philox4x32_10(group, static_cast<uint32_t>(sample), static_cast<uint32_t>(sample >> 32), stream,
                       static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// Four noise values of one group for the continuous noises.
FASTCERT_HOST_DEVICE void continuous4(const NoiseParams& p, const U32x4& r, float out[4]) {
  if (p.type == kGaussian) {
    gaussian4(r, out);
  } else if (p.type == kLaplace) {
    for (int k = 0; k < 4; ++k) out[k] = laplace1(r.v[k]);
  } else {
    for (int k = 0; k < 4; ++k) out[k] = uniform_pm1(r.v[k]);
  }
  for (int k = 0; k < 4; ++k) out[k] *= p.scale;
}

FASTCERT_HOST_DEVICE uint64_t mulhi64(uint64_t a, uint64_t b) {
#if defined(__CUDA_ARCH__)
  return __umul64hi(a, b);
#else
  return static_cast<uint64_t>((static_cast<unsigned __int128>(a) * b) >> 64);
#endif
}

// Discrete noise on one coordinate at level `level` in {0..K}: keep with probability alpha, else one
// of the K other levels uniformly. Returns the new level.
FASTCERT_HOST_DEVICE uint32_t discrete1(const NoiseParams& p, const U32x4& r, uint32_t level) {
  const uint64_t keep_word = (static_cast<uint64_t>(r.v[0]) << 32) | r.v[1];
  if (keep_word < p.keep_thresh) return level;
  const uint64_t lvl_word = (static_cast<uint64_t>(r.v[2]) << 32) | r.v[3];
  const uint32_t offset = static_cast<uint32_t>(mulhi64(lvl_word, p.K));  // uniform in [0, K)
  uint32_t nl = level + 1u + offset;
  if (nl > p.K) nl -= (p.K + 1u);
  return nl;
}

// Discrete inputs are snapped to their level index; Python checks they lie on the grid.
FASTCERT_HOST_DEVICE uint32_t level_of(float x, uint32_t K) {
  float t = x * static_cast<float>(K) + 0.5f;
  t = t < 0.0f ? 0.0f : t;
  uint32_t l = static_cast<uint32_t>(t);
  return l > K ? K : l;
}

}  // namespace fastcert
