// FASTCERT_HOST_DEVICE marks math shared by the CPU (OpenMP) and CUDA paths, so both compute the
// same function: __host__ __device__ under nvcc, plain inline otherwise.
#pragma once
#if defined(__CUDACC__)
#define FASTCERT_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define FASTCERT_HOST_DEVICE inline
#endif
