// FASTCERT_HOST_DEVICE marks math shared by the CPU (OpenMP) and CUDA paths, so both compute the
// same function: __host__ __device__ under nvcc, plain inline otherwise.
#pragma once
#if defined(__CUDACC__)
#define FASTCERT_HOST_DEVICE __host__ __device__ __forceinline__
#elif defined(__GNUC__)
// always_inline: the CPU kernels are compiled twice (baseline and AVX2, see sampling_cpu.cpp) and the
// shared math must be inlined into each so that it is vectorized for that instruction set.
#define FASTCERT_HOST_DEVICE inline __attribute__((always_inline))
#else
#define FASTCERT_HOST_DEVICE inline
#endif
