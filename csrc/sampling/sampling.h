// Fused noise-sample-and-count, CPU entry points (plain buffers; no Python, no torch).
#pragma once
#include <cstdint>

#include "sampling/noise_math.h"

namespace fastcert {

// x: (D,) float32, out: (B, D) float32 caller's buffer.
// out[s, j] = x[j] + noise(seed, stream, start + s, j)      (continuous noises)
// out[s, j] = new_level(x[j], ...) / K                       (discrete noise)
void sample_noise_cpu(const float* x, int64_t D, float* out, int64_t B, uint64_t seed, uint32_t stream,
                      uint64_t start, const NoiseParams& p);

// Noise values alone (out[s, j] = noise(...)), for tests and for callers that add it themselves.
void noise_only_cpu(int64_t D, float* out, int64_t B, uint64_t seed, uint32_t stream, uint64_t start,
                    const NoiseParams& p);

// logits: (B, C) row-major; counts: (C,) int64, incremented by the argmax of each row (ties go to the
// lower class index). Rows containing NaN are not counted; their number is returned.
template <typename T>
int64_t count_argmax_cpu(const T* logits, int64_t B, int64_t C, int64_t* counts);

// Like count_argmax_cpu, and also writes per row the softmax probability of class `cls` (score)
// and the margin p_cls - max_{j != cls} p_j into score/margin (each (B,), may be null).
template <typename T>
int64_t count_argmax_conf_cpu(const T* logits, int64_t B, int64_t C, int64_t* counts, int64_t cls,
                              float* score, float* margin);

int max_threads();

}  // namespace fastcert
