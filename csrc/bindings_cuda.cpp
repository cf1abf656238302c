// fastcert._core_cuda: CUDA entry points. Arguments are raw device pointers (as integers), sizes and
// the caller's CUDA stream (torch.cuda.current_stream().cuda_stream); Python checks devices, dtypes,
// shapes and contiguity before calling.
#include <pybind11/pybind11.h>

#include <cmath>
#include <cuda_runtime_api.h>

#include "common/check.h"
#include "common/limits.h"
#include "sampling/sampling_cuda.h"

#ifndef FASTCERT_CUDA_ARCHS
#define FASTCERT_CUDA_ARCHS ""
#endif

namespace py = pybind11;
using namespace fastcert;

PYBIND11_MODULE(_core_cuda, m) {
  m.doc() = "fastcert CUDA kernels (fused noise sampling and on-device counting)";
  m.def("build_info", []() {
    py::dict d;
    d["architectures"] = std::string(FASTCERT_CUDA_ARCHS);
    d["cuda_runtime"] = CUDART_VERSION;
    return d;
  });
  m.def("device_count", &cuda::device_count);
  m.def(
      "sample",
      [](uintptr_t x, int64_t D, uintptr_t out, int64_t B, uint64_t seed, uint32_t stream_tag, uint64_t start,
         int type, float scale, uint64_t keep_thresh, uint32_t K, uintptr_t stream, uintptr_t start_dev,
         uintptr_t key_dev) {
        FASTCERT_CHECK_ARG(x != 0 && out != 0, "null device pointer");
        FASTCERT_CHECK_ARG(D >= 0 && B >= 0, "sizes must be >= 0");
        check_coordinates(D);
        FASTCERT_CHECK_ARG(type >= kGaussian && type <= kDiscrete, "noise type must be 0..3");
        FASTCERT_CHECK_ARG(type == kDiscrete ? K >= 1 : (std::isfinite(scale) && scale > 0.0f),
                           "scale must be > 0 (or K >= 1 for discrete noise)");
        NoiseParams p{type, scale, keep_thresh, K};
        py::gil_scoped_release nogil;
        cuda::sample(reinterpret_cast<const float*>(x), D, reinterpret_cast<float*>(out), B, seed, stream_tag,
                     start, p, stream, reinterpret_cast<const uint64_t*>(start_dev),
                     reinterpret_cast<const uint64_t*>(key_dev));
      },
      py::arg("x"), py::arg("D"), py::arg("out"), py::arg("B"), py::arg("seed"), py::arg("stream_tag"),
      py::arg("start"), py::arg("noise_type"), py::arg("scale"), py::arg("keep_thresh"), py::arg("K"),
      py::arg("stream"), py::arg("start_dev") = 0, py::arg("key_dev") = 0,
      "start_dev: 0, or a device int64 counter added to start (for CUDA-graph replays; see advance). "
      "key_dev: 0, or a device int64[2] {seed, stream_tag} used instead of seed and stream_tag (a cached "
      "CUDA graph serves every input point).");
  m.def(
      "advance",
      [](uintptr_t counter, uint64_t by, uintptr_t stream) {
        FASTCERT_CHECK_ARG(counter != 0, "null device pointer");
        py::gil_scoped_release nogil;
        cuda::advance(reinterpret_cast<uint64_t*>(counter), by, stream);
      },
      py::arg("counter"), py::arg("by"), py::arg("stream"), "*counter += by on the stream (a device int64)");
  m.def(
      "count",
      [](uintptr_t logits, int dtype, int64_t B, int64_t C, uintptr_t counts, uintptr_t nan_rows, int64_t cls,
         uintptr_t score, uintptr_t margin, uintptr_t stream) {
        FASTCERT_CHECK_ARG(logits != 0 && counts != 0 && nan_rows != 0, "null device pointer");
        FASTCERT_CHECK_ARG(B >= 0 && C >= 1, "need B >= 0 and C >= 1");
        FASTCERT_CHECK_ARG(cls >= -1 && cls < C, "cls must be -1 or a class index");
        FASTCERT_CHECK_ARG(cls >= 0 || (score == 0 && margin == 0), "score/margin need cls >= 0");
        py::gil_scoped_release nogil;
        cuda::count(reinterpret_cast<const void*>(logits), dtype, B, C, reinterpret_cast<int64_t*>(counts),
                    reinterpret_cast<int64_t*>(nan_rows), cls, reinterpret_cast<float*>(score),
                    reinterpret_cast<float*>(margin), stream);
      },
      py::arg("logits"), py::arg("dtype"), py::arg("B"), py::arg("C"), py::arg("counts"), py::arg("nan_rows"),
      py::arg("cls"), py::arg("score"), py::arg("margin"), py::arg("stream"));
}
