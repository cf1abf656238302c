// pybind11 glue for the fused interval ReLU and CROWN kernels. Shapes, dtypes, contiguity and writability are checked here
// again (fastcert._native checks first), so no call can read or write outside a buffer.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "bind_registry.h"
#include "common/check.h"
#include "ibp/ibp_kernels.h"

namespace py = pybind11;

namespace fastcert {
namespace {

template <typename T>
using Arr = py::array_t<T, py::array::c_style>;

template <typename T>
void check_per_sample(const Arr<T>& a, int64_t B, int64_t F, const char* msg) {
  FASTCERT_CHECK_ARG(a.ndim() == 2 && a.shape(0) == B && a.shape(1) == F, msg);
}

template <typename T>
void py_interval_relu(Arr<T> c, Arr<T> r, Arr<T> c_out, Arr<T> r_out, int threads) {
  const int64_t n = c.size();
  FASTCERT_CHECK_ARG(r.size() == n && c_out.size() == n && r_out.size() == n,
                     "c, r, c_out and r_out must have the same number of entries");
  FASTCERT_CHECK_ARG(c_out.writeable() && r_out.writeable(), "c_out and r_out must be writable");
  const T *cp = c.data(), *rp = r.data();
  T *cop = c_out.mutable_data(), *rop = r_out.mutable_data();
  py::gil_scoped_release nogil;
  if constexpr (std::is_same_v<T, float>)
    interval_relu_f32(cp, rp, cop, rop, n, threads);
  else
    interval_relu_f64(cp, rp, cop, rop, n, threads);
}

template <typename T>
void py_relu_back(Arr<T> lam, Arr<T> a_l, Arr<T> a_u, Arr<T> t, Arr<T> bias, int threads) {
  FASTCERT_CHECK_ARG(lam.ndim() == 3, "lam must be 3-D (B, K, F)");
  const int64_t B = lam.shape(0), K = lam.shape(1), F = lam.shape(2);
  check_per_sample(a_l, B, F, "a_l must have shape (B, F) to match lam");
  check_per_sample(a_u, B, F, "a_u must have shape (B, F) to match lam");
  check_per_sample(t, B, F, "t must have shape (B, F) to match lam");
  FASTCERT_CHECK_ARG(bias.ndim() == 2 && bias.shape(0) == B && bias.shape(1) == K, "bias must have shape (B, K) to match lam");
  FASTCERT_CHECK_ARG(lam.writeable(), "lam must be writable (it is updated in place)");
  FASTCERT_CHECK_ARG(bias.writeable(), "bias must be writable (it is updated in place)");
  T* lp = lam.mutable_data();
  T* bp = bias.mutable_data();
  const T *alp = a_l.data(), *aup = a_u.data(), *tp = t.data();
  py::gil_scoped_release nogil;
  if constexpr (std::is_same_v<T, float>)
    crown_relu_back_f32(lp, alp, aup, tp, bp, B, K, F, threads);
  else
    crown_relu_back_f64(lp, alp, aup, tp, bp, B, K, F, threads);
}

template <typename T>
py::array_t<double> py_concretize(Arr<T> lam, Arr<T> c, Arr<T> r, py::object x, int dual, int threads) {
  FASTCERT_CHECK_ARG(lam.ndim() == 3, "lam must be 3-D (B, K, F)");
  FASTCERT_CHECK_ARG(dual >= 0 && dual <= 2, "dual must be 0 (none), 1 (l2: sum of squares) or 2 (l1: max |lam|)");
  const int64_t B = lam.shape(0), K = lam.shape(1), F = lam.shape(2);
  check_per_sample(c, B, F, "c must have shape (B, F) to match lam");
  check_per_sample(r, B, F, "r must have shape (B, F) to match lam");
  Arr<T> xa;
  const T* xp = nullptr;
  if (!x.is_none()) {
    // no silent conversion: x must already be a C-contiguous array of lam's dtype
    FASTCERT_CHECK_ARG(py::isinstance<py::array>(x), "x must be a numpy array or None");
    py::array xr = x.cast<py::array>();
    FASTCERT_CHECK_ARG(xr.dtype().is(py::dtype::of<T>()), "x must have lam's dtype");
    FASTCERT_CHECK_ARG((xr.flags() & py::array::c_style) != 0, "x must be C-contiguous");
    xa = x.cast<Arr<T>>();
    check_per_sample(xa, B, F, "x must have shape (B, F) to match lam");
    xp = xa.data();
  }
  py::array_t<double> out({B, K, int64_t(4)});
  double* op = out.mutable_data();
  const T *lp = lam.data(), *cp = c.data(), *rp = r.data();
  {
    py::gil_scoped_release nogil;
    if constexpr (std::is_same_v<T, float>)
      crown_concretize_f32(lp, cp, rp, xp, B, K, F, dual, op, threads);
    else
      crown_concretize_f64(lp, cp, rp, xp, B, K, F, dual, op, threads);
  }
  return out;
}

void bind(py::module_& m) {
  m.def("interval_relu", &py_interval_relu<float>, py::arg("c").noconvert(), py::arg("r").noconvert(),
        py::arg("c_out").noconvert(), py::arg("r_out").noconvert(), py::arg("threads") = 0,
        "Interval ReLU in center/radius form, elementwise: lo = max(c - r, 0), hi = max(c + r, 0),\n"
        "c_out = (hi + lo) / 2, r_out = (hi - lo) / 2. float32 or float64, C-contiguous; outputs may be the inputs.");
  m.def("interval_relu", &py_interval_relu<double>, py::arg("c").noconvert(), py::arg("r").noconvert(),
        py::arg("c_out").noconvert(), py::arg("r_out").noconvert(), py::arg("threads") = 0);
  m.def("crown_relu_back", &py_relu_back<float>, py::arg("lam").noconvert(), py::arg("a_l").noconvert(),
        py::arg("a_u").noconvert(), py::arg("t").noconvert(), py::arg("bias").noconvert(), py::arg("threads") = 0,
        "In place: lam (B, K, F) <- lam * (lam >= 0 ? a_l : a_u); bias (B, K) += sum_f min(lam, 0) * t.\n"
        "float32 or float64, C-contiguous; a_l, a_u, t are (B, F).");
  m.def("crown_relu_back", &py_relu_back<double>, py::arg("lam").noconvert(), py::arg("a_l").noconvert(),
        py::arg("a_u").noconvert(), py::arg("t").noconvert(), py::arg("bias").noconvert(), py::arg("threads") = 0);
  m.def("crown_concretize", &py_concretize<float>, py::arg("lam").noconvert(), py::arg("c").noconvert(),
        py::arg("r").noconvert(), py::arg("x") = py::none(), py::arg("dual") = 0, py::arg("threads") = 0,
        "lam (B, K, F); c, r, x (B, F) -> (B, K, 4) float64: sum lam c, sum |lam| r, sum lam x (0 without x),\n"
        "and sum lam^2 (dual 1) or max |lam| (dual 2) or 0 (dual 0).");
  m.def("crown_concretize", &py_concretize<double>, py::arg("lam").noconvert(), py::arg("c").noconvert(),
        py::arg("r").noconvert(), py::arg("x") = py::none(), py::arg("dual") = 0, py::arg("threads") = 0);
}

}  // namespace
FASTCERT_REGISTER_BINDINGS(bind);
}  // namespace fastcert
