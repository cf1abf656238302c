// CUDA fused sampling and counting: grid-stride kernels on the caller's stream. The sampling kernel
// computes exactly the function of noise_math.h that the CPU path computes (same counters, same
// polynomials), writing x + noise straight into the model's input buffer. The counting kernel keeps
// the per-class histogram on the device, so a certification loop never synchronizes per batch.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "sampling/sampling_cuda.h"

namespace fastcert {
namespace cuda {

#define FASTCERT_CUDA_CHECK(expr)                                                                  \
  do {                                                                                             \
    cudaError_t _e = (expr);                                                                       \
    if (_e != cudaSuccess)                                                                         \
      throw std::runtime_error(std::string("fastcert CUDA error at ") + __FILE__ + ":" +           \
                               std::to_string(__LINE__) + ": " + cudaGetErrorString(_e));          \
  } while (0)

namespace {

// Threads per block: 256 keeps enough warps in flight to hide Philox latency on sm_80/sm_90.
constexpr int kThreads = 256;

int grid_for(int64_t work) {
  int64_t blocks = (work + kThreads - 1) / kThreads;
  // A grid-stride loop needs no more than a few waves; 65535 stays within every limit.
  if (blocks > 65535) blocks = 65535;
  if (blocks < 1) blocks = 1;
  return static_cast<int>(blocks);
}

// x: (D,) -> out: (B, D); one thread per (sample, group of four coordinates)
// start_dev: null, or a device counter added to start (CUDA-graph replays advance it on the device)
// key_dev: null, or a device {seed, stream_tag} replacing the arguments (one graph for every point)
__global__ void continuous_kernel(const float* __restrict__ x, int64_t D, int64_t G, float* __restrict__ out,
                                  int64_t B, uint64_t seed, uint32_t stream_tag, uint64_t start,
                                  const unsigned long long* start_dev, const unsigned long long* key_dev,
                                  NoiseParams p) {
  const int64_t total = B * G;
  if (start_dev) start += static_cast<uint64_t>(*start_dev);
  if (key_dev) {
    seed = static_cast<uint64_t>(key_dev[0]);
    stream_tag = static_cast<uint32_t>(key_dev[1]);
  }
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t s = i / G;
    const int64_t g = i - s * G;
    const U32x4 r = noise_words(seed, stream_tag, start + static_cast<uint64_t>(s), static_cast<uint32_t>(g));
    float v[4];
    continuous4(p, r, v);
    float* row = out + s * D;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int64_t j = k * G + g;
      if (j < D) row[j] = x[j] + v[k];
    }
  }
}

// x: (D,) on the grid {0, 1/K, ..., 1} -> out: (B, D); one thread per (sample, coordinate)
__global__ void discrete_kernel(const float* __restrict__ x, int64_t D, float* __restrict__ out, int64_t B,
                                uint64_t seed, uint32_t stream_tag, uint64_t start,
                                const unsigned long long* start_dev, const unsigned long long* key_dev,
                                NoiseParams p) {
  const int64_t total = B * D;
  if (start_dev) start += static_cast<uint64_t>(*start_dev);
  if (key_dev) {
    seed = static_cast<uint64_t>(key_dev[0]);
    stream_tag = static_cast<uint32_t>(key_dev[1]);
  }
  const float invK = 1.0f / static_cast<float>(p.K);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t s = i / D;
    const int64_t j = i - s * D;
    const U32x4 r = noise_words(seed, stream_tag, start + static_cast<uint64_t>(s), static_cast<uint32_t>(j));
    const uint32_t nl = discrete1(p, r, level_of(x[j], p.K));
    out[i] = static_cast<float>(nl) * invK;
  }
}

template <typename T>
__device__ __forceinline__ float to_f(T v) {
  return static_cast<float>(v);
}
template <>
__device__ __forceinline__ float to_f<__half>(__half v) {
  return __half2float(v);
}
template <>
__device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
template <typename T>
__device__ __forceinline__ double to_d(T v) {
  return static_cast<double>(to_f<T>(v));
}
template <>
__device__ __forceinline__ double to_d<double>(double v) {
  return v;
}

// logits: (B, C) -> counts: (C,) += argmax; one warp per row, lanes stride over classes, then a
// shuffle reduction that keeps the larger value and, on ties, the lower index.
template <typename T>
__global__ void count_kernel(const T* __restrict__ logits, int64_t B, int64_t C, unsigned long long* counts,
                             unsigned long long* nan_rows, int64_t cls, float* score, float* margin) {
  const int lane = threadIdx.x & 31;
  const int64_t warps_per_grid = (static_cast<int64_t>(gridDim.x) * blockDim.x) >> 5;
  for (int64_t row = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) >> 5; row < B;
       row += warps_per_grid) {
    const T* r = logits + row * C;
    double best = -INFINITY;
    int64_t best_i = C;  // sentinel larger than any index
    int nan = 0;
    for (int64_t c = lane; c < C; c += 32) {
      const double v = to_d<T>(r[c]);
      if (isnan(v)) nan = 1;
      if (v > best || (v == best && c < best_i)) {
        best = v;
        best_i = c;
      }
    }
    for (int off = 16; off > 0; off >>= 1) {
      const double ov = __shfl_down_sync(0xffffffffu, best, off);
      const long long oi = __shfl_down_sync(0xffffffffu, static_cast<long long>(best_i), off);
      const int on = __shfl_down_sync(0xffffffffu, nan, off);
      nan |= on;
      if (ov > best || (ov == best && oi < best_i)) {
        best = ov;
        best_i = oi;
      }
    }
    nan = __shfl_sync(0xffffffffu, nan, 0);
    best = __shfl_sync(0xffffffffu, best, 0);
    best_i = __shfl_sync(0xffffffffu, static_cast<long long>(best_i), 0);
    if (nan) {
      if (lane == 0) {
        atomicAdd(nan_rows, 1ull);
        if (score) score[row] = __int_as_float(0x7fc00000);
        if (margin) margin[row] = __int_as_float(0x7fc00000);
      }
      continue;
    }
    if (best_i >= C) best_i = 0;  // all -inf: argmax is the first class, as on the CPU
    if (lane == 0) atomicAdd(counts + best_i, 1ull);
    if (cls >= 0 && (score || margin)) {
      const double mx = best;
      double z = 0.0, other = -INFINITY;
      for (int64_t c = lane; c < C; c += 32) {
        const double v = to_d<T>(r[c]);
        z += exp(v - mx);
        if (c != cls) other = fmax(other, v);
      }
      for (int off = 16; off > 0; off >>= 1) {
        z += __shfl_down_sync(0xffffffffu, z, off);
        other = fmax(other, __shfl_down_sync(0xffffffffu, other, off));
      }
      if (lane == 0) {
        const double pc = exp(to_d<T>(r[cls]) - mx) / z;
        const double po = C > 1 ? exp(other - mx) / z : 0.0;
        if (score) score[row] = static_cast<float>(pc);
        if (margin) margin[row] = static_cast<float>(pc - po);
      }
    }
  }
}

__global__ void advance_kernel(unsigned long long* counter, unsigned long long by) {
  if (blockIdx.x == 0 && threadIdx.x == 0) *counter += by;
}

}  // namespace

void sample(const float* x, int64_t D, float* out, int64_t B, uint64_t seed, uint32_t stream_tag,
            uint64_t start, const NoiseParams& p, uintptr_t stream, const uint64_t* start_dev,
            const uint64_t* key_dev) {
  if (B == 0 || D == 0) return;
  cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
  const auto* sd = reinterpret_cast<const unsigned long long*>(start_dev);
  const auto* kd = reinterpret_cast<const unsigned long long*>(key_dev);
  if (p.type == kDiscrete) {
    discrete_kernel<<<grid_for(B * D), kThreads, 0, st>>>(x, D, out, B, seed, stream_tag, start, sd, kd, p);
  } else {
    const int64_t G = (D + 3) / 4;
    continuous_kernel<<<grid_for(B * G), kThreads, 0, st>>>(x, D, G, out, B, seed, stream_tag, start, sd, kd, p);
  }
  FASTCERT_CUDA_CHECK(cudaGetLastError());
}

void advance(uint64_t* counter, uint64_t by, uintptr_t stream) {
  advance_kernel<<<1, 1, 0, reinterpret_cast<cudaStream_t>(stream)>>>(
      reinterpret_cast<unsigned long long*>(counter), static_cast<unsigned long long>(by));
  FASTCERT_CUDA_CHECK(cudaGetLastError());
}

void count(const void* logits, int dtype, int64_t B, int64_t C, int64_t* counts, int64_t* nan_rows, int64_t cls,
           float* score, float* margin, uintptr_t stream) {
  if (B == 0) return;
  cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
  auto* cnt = reinterpret_cast<unsigned long long*>(counts);
  auto* nr = reinterpret_cast<unsigned long long*>(nan_rows);
  const int blocks = grid_for(B * 32);
  switch (dtype) {
    case 0: count_kernel<float><<<blocks, kThreads, 0, st>>>(static_cast<const float*>(logits), B, C, cnt, nr, cls, score, margin); break;
    case 1: count_kernel<__half><<<blocks, kThreads, 0, st>>>(static_cast<const __half*>(logits), B, C, cnt, nr, cls, score, margin); break;
    case 2: count_kernel<__nv_bfloat16><<<blocks, kThreads, 0, st>>>(static_cast<const __nv_bfloat16*>(logits), B, C, cnt, nr, cls, score, margin); break;
    case 3: count_kernel<double><<<blocks, kThreads, 0, st>>>(static_cast<const double*>(logits), B, C, cnt, nr, cls, score, margin); break;
    default: throw std::invalid_argument("fastcert._core_cuda: logits dtype code must be 0..3");
  }
  FASTCERT_CUDA_CHECK(cudaGetLastError());
}

int device_count() {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error; zero devices is an answer, not a failure
    return 0;
  }
  return n;
}

}  // namespace cuda
}  // namespace fastcert
