// Lattice (discretized-Gaussian) sampling for sound randomized smoothing of grid inputs
// (fastcert/smoothing/sound.py proves the construction). No floating-point addition x + noise happens:
// each sample is an integer lattice point z = base + J, J drawn by exact inversion of a 64-bit uniform
// against a table of integer thresholds, and the network input is the float32 value of z / denom.
#pragma once
#include <cstdint>

namespace fastcert {

// Number of guide buckets (top bits of the uniform): 2^13 keeps the guide in 32 KiB (L1-resident) and
// leaves on average N / 8192 table boundaries per bucket, so the inversion is one or two compares.
constexpr int kLatticeGuideBits = 13;

// base: (D,) int64, out: (B, D) float32 (caller's buffer), thr: (N,) uint64 non-decreasing.
// For sample s = start + b and coordinate j, U = 64-bit uniform from Philox counter
// (j / 2, s_lo, s_hi, stream), key (seed_lo, seed_hi): words 0,1 for even j, words 2,3 for odd j
// (high word first). idx = #{i : thr[i] <= U} in [0, N]; J = j_min + idx;
// out[b, j] = float32(double(base[j] + J) / double(denom)).
// Preconditions (checked by the binding): D < 2^33, thr sorted, denom >= 1, |base| + |j_min| + N < 2^52.
void lattice_sample_cpu(const int64_t* base, int64_t D, float* out, int64_t B, uint64_t seed, uint32_t stream,
                        uint64_t start, const uint64_t* thr, int64_t N, int64_t j_min, int64_t denom);

// Same sampling, but writes the integer offsets J themselves (for tests): out (B, D) int64.
void lattice_offsets_cpu(int64_t D, int64_t* out, int64_t B, uint64_t seed, uint32_t stream, uint64_t start,
                         const uint64_t* thr, int64_t N, int64_t j_min);

}  // namespace fastcert
