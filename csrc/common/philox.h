// Philox 4x32-10 (Salmon, Moraes, Dror & Shaw, SC'11): a counter-based generator. The output for
// (key, counter) is a pure function, so any sample of any certification can be regenerated from
// (seed, stream, sample index, coordinate group) alone, on any device, in any order, by any rank.
#pragma once
#include <cstdint>
#include "common/host_device.h"

namespace fastcert {

struct U32x4 {
  uint32_t v[4];
};

FASTCERT_HOST_DEVICE void mulhilo32(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  const uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
}

// counter (c0..c3), key (k0, k1) -> four independent uniform 32-bit words, returned in place in c0..c3
// (scalars only, so that a loop calling it vectorizes).
FASTCERT_HOST_DEVICE void philox4x32_10_inplace(uint32_t& c0, uint32_t& c1, uint32_t& c2, uint32_t& c3,
                                                uint32_t k0, uint32_t k1) {
  // Round multipliers and Weyl key increments of the reference implementation (Random123).
  const uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
  const uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
#if defined(__CUDACC__)
#pragma unroll
#elif defined(__GNUC__) && !defined(__clang__)
#pragma GCC unroll 10  // fully unrolled: the loop body must be straight-line code to vectorize
#elif defined(__clang__)
#pragma unroll
#endif
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo32(M0, c0, hi0, lo0);
    mulhilo32(M1, c2, hi1, lo1);
    const uint32_t n0 = hi1 ^ c1 ^ k0;
    const uint32_t n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    k0 += W0;
    k1 += W1;
  }
}

FASTCERT_HOST_DEVICE U32x4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                                         uint32_t k0, uint32_t k1) {
  philox4x32_10_inplace(c0, c1, c2, c3, k0, k1);
  U32x4 out;
  out.v[0] = c0;
  out.v[1] = c1;
  out.v[2] = c2;
  out.v[3] = c3;
  return out;
}

}  // namespace fastcert
