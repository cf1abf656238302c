// pybind11 glue for the CPU sampling kernels. Shapes, dtypes and contiguity are checked again here
// (Python checks first) so that no call can read or write outside a buffer.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "bind_registry.h"
#include "common/check.h"
#include "common/limits.h"
#include "sampling/sampling.h"

namespace py = pybind11;

namespace fastcert {
namespace {

using FArr = py::array_t<float, py::array::c_style>;
using I64Arr = py::array_t<int64_t, py::array::c_style>;

NoiseParams make_params(int type, float scale, uint64_t keep_thresh, uint32_t K) {
  FASTCERT_CHECK_ARG(type >= kGaussian && type <= kDiscrete, "noise type must be 0..3");
  if (type == kDiscrete) {
    FASTCERT_CHECK_ARG(K >= 1, "K must be >= 1 for discrete noise");
  } else {
    FASTCERT_CHECK_ARG(std::isfinite(scale) && scale > 0.0f, "scale must be finite and > 0");
  }
  return NoiseParams{type, scale, keep_thresh, K};
}

void py_sample(FArr x, FArr out, uint64_t seed, uint32_t stream, uint64_t start, int type, float scale,
               uint64_t keep_thresh, uint32_t K) {
  FASTCERT_CHECK_ARG(x.ndim() == 1, "x must be 1-D (flattened input)");
  FASTCERT_CHECK_ARG(out.ndim() == 2, "out must be 2-D (batch, D)");
  FASTCERT_CHECK_ARG(out.shape(1) == x.shape(0), "out.shape[1] must equal x.size");
  check_coordinates(x.shape(0));
  FASTCERT_CHECK_ARG(out.writeable(), "out must be writeable");
  const NoiseParams p = make_params(type, scale, keep_thresh, K);
  const float* xp = x.data();
  float* op = out.mutable_data();
  const int64_t D = x.shape(0), B = out.shape(0);
  py::gil_scoped_release nogil;
  sample_noise_cpu(xp, D, op, B, seed, stream, start, p);
}

void py_noise(FArr out, uint64_t seed, uint32_t stream, uint64_t start, int type, float scale,
              uint64_t keep_thresh, uint32_t K) {
  FASTCERT_CHECK_ARG(out.ndim() == 2, "out must be 2-D (batch, D)");
  FASTCERT_CHECK_ARG(out.writeable(), "out must be writeable");
  check_coordinates(out.shape(1));
  const NoiseParams p = make_params(type, scale, keep_thresh, K);
  float* op = out.mutable_data();
  const int64_t D = out.shape(1), B = out.shape(0);
  py::gil_scoped_release nogil;
  noise_only_cpu(D, op, B, seed, stream, start, p);
}

template <typename T>
int64_t py_count(py::array_t<T, py::array::c_style> logits, I64Arr counts, int64_t cls, py::object score,
                 py::object margin) {
  FASTCERT_CHECK_ARG(logits.ndim() == 2, "logits must be 2-D (batch, classes)");
  FASTCERT_CHECK_ARG(logits.shape(1) >= 1, "logits must have at least one class");
  FASTCERT_CHECK_ARG(counts.ndim() == 1 && counts.shape(0) == logits.shape(1),
                     "counts must be 1-D with one entry per class");
  FASTCERT_CHECK_ARG(counts.writeable(), "counts must be writeable");
  const int64_t B = logits.shape(0), C = logits.shape(1);
  FASTCERT_CHECK_ARG(cls >= -1 && cls < C, "cls must be -1 or a class index");
  float* sp = nullptr;
  float* mp = nullptr;
  FArr s_arr, m_arr;
  if (!score.is_none()) {
    s_arr = score.cast<FArr>();
    FASTCERT_CHECK_ARG(s_arr.ndim() == 1 && s_arr.shape(0) == B && s_arr.writeable(),
                       "score must be a writeable float32 array of shape (batch,)");
    sp = s_arr.mutable_data();
  }
  if (!margin.is_none()) {
    m_arr = margin.cast<FArr>();
    FASTCERT_CHECK_ARG(m_arr.ndim() == 1 && m_arr.shape(0) == B && m_arr.writeable(),
                       "margin must be a writeable float32 array of shape (batch,)");
    mp = m_arr.mutable_data();
  }
  FASTCERT_CHECK_ARG(cls >= 0 || (sp == nullptr && mp == nullptr), "score/margin need cls >= 0");
  const T* lp = logits.data();
  int64_t* cp = counts.mutable_data();
  py::gil_scoped_release nogil;
  return count_argmax_conf_cpu<T>(lp, B, C, cp, cls, sp, mp);
}

void bind(py::module_& m) {
  m.def("sample", &py_sample, py::arg("x"), py::arg("out"), py::arg("seed"), py::arg("stream"), py::arg("start"),
        py::arg("noise_type"), py::arg("scale"), py::arg("keep_thresh") = 0, py::arg("K") = 0,
        "x: (D,) float32, out: (B, D) float32 -> out[s] = x + noise(seed, stream, start + s). In place.");
  m.def("noise", &py_noise, py::arg("out"), py::arg("seed"), py::arg("stream"), py::arg("start"),
        py::arg("noise_type"), py::arg("scale"), py::arg("keep_thresh") = 0, py::arg("K") = 0,
        "out: (B, D) float32 <- noise alone (discrete: level of a coordinate starting at level 0, / K).");
  // py::array_t would silently convert dtypes; noconvert makes a float64 call pick the float64 overload.
  m.def("count", &py_count<float>, py::arg("logits").noconvert(), py::arg("counts").noconvert(),
        py::arg("cls") = -1, py::arg("score") = py::none(), py::arg("margin") = py::none(),
        "logits: (B, C) float32, counts: (C,) int64 += argmax counts (ties -> lower index). Returns NaN rows.");
  m.def("count", &py_count<double>, py::arg("logits").noconvert(), py::arg("counts").noconvert(),
        py::arg("cls") = -1, py::arg("score") = py::none(), py::arg("margin") = py::none());
  m.def("max_threads", &max_threads);
  m.attr("NOISE_GAUSSIAN") = static_cast<int>(kGaussian);
  m.attr("NOISE_LAPLACE") = static_cast<int>(kLaplace);
  m.attr("NOISE_UNIFORM") = static_cast<int>(kUniform);
  m.attr("NOISE_DISCRETE") = static_cast<int>(kDiscrete);
  m.attr("MAX_COORDINATES") = kMaxCoordinates;
}

}  // namespace
FASTCERT_REGISTER_BINDINGS(bind);
}  // namespace fastcert
