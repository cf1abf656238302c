// CUDA entry points of the fused sampling kernels. Pointers are device pointers; every launch goes on
// the caller's stream and is checked (a failure throws std::runtime_error -> Python RuntimeError).
#pragma once
#include <cstdint>

#include "sampling/noise_math.h"

namespace fastcert {
namespace cuda {

// Samples start + (*start_dev if start_dev else 0) + 0 .. B-1. start_dev (a device uint64, or null)
// lets a captured CUDA graph draw fresh samples on every replay: advance() bumps it on the stream.
// key_dev (a device uint64[2] {seed, stream_tag}, or null) replaces seed and stream_tag, so one
// captured graph serves every input point: the caller writes the point's key before the replays.
void sample(const float* x, int64_t D, float* out, int64_t B, uint64_t seed, uint32_t stream_tag,
            uint64_t start, const NoiseParams& p, uintptr_t stream, const uint64_t* start_dev = nullptr,
            const uint64_t* key_dev = nullptr);

// *counter += by, on the stream (one thread).
void advance(uint64_t* counter, uint64_t by, uintptr_t stream);

// dtype: 0 float32, 1 float16, 2 bfloat16, 3 float64. counts: (C,) int64 on the device;
// nan_rows: one int64 on the device. score/margin: (B,) float32 or null (need cls >= 0).
void count(const void* logits, int dtype, int64_t B, int64_t C, int64_t* counts, int64_t* nan_rows,
           int64_t cls, float* score, float* margin, uintptr_t stream);

int device_count();

}  // namespace cuda
}  // namespace fastcert
