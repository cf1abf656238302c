// Function multiversioning for the CPU kernels: FASTCERT_CLONES compiles a function for AVX-512
// (x86-64-v4), AVX2 (x86-64-v3) and baseline x86-64, picked at load time, so one binary uses the widest
// units present. GCC on x86-64 only, and off under AddressSanitizer (ifunc resolvers and ASan clash).
#pragma once

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
#define FASTCERT_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FASTCERT_CLONES
#endif
#define FASTCERT_INLINE inline __attribute__((always_inline))
