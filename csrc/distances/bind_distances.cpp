// pybind11 glue for the nearest-neighbour distance kernel. Every shape, dtype and index is checked
// here again (Python checks first), so no call can read outside a buffer.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "bind_registry.h"
#include "common/check.h"
#include "distances/distances.h"

namespace py = pybind11;

namespace fastcert {
namespace {

using I64Arr = py::array_t<int64_t, py::array::c_style>;
using F64Out = py::array_t<double>;

template <typename T>
py::tuple py_nearest(py::array_t<T, py::array::c_style> q, py::array_t<T, py::array::c_style> r, I64Arr qlab,
                     I64Arr rlab, py::object exclude, int norm) {
  FASTCERT_CHECK_ARG(q.ndim() == 2, "q must be 2-D (queries, features)");
  FASTCERT_CHECK_ARG(r.ndim() == 2, "r must be 2-D (references, features)");
  FASTCERT_CHECK_ARG(q.shape(1) == r.shape(1), "q and r must have the same number of features");
  FASTCERT_CHECK_ARG(q.shape(1) >= 1, "at least one feature is needed");
  FASTCERT_CHECK_ARG(norm >= kDistL1 && norm <= kDistLinf, "norm must be 0 (l1), 1 (l2) or 2 (linf)");
  const int64_t nq = q.shape(0), nr = r.shape(0), d = q.shape(1);
  FASTCERT_CHECK_ARG(qlab.ndim() == 1 && qlab.shape(0) == nq, "qlab must have shape (queries,)");
  FASTCERT_CHECK_ARG(rlab.ndim() == 1 && rlab.shape(0) == nr, "rlab must have shape (references,)");
  I64Arr ex;
  const int64_t* exp = nullptr;
  if (!exclude.is_none()) {
    ex = exclude.cast<I64Arr>();
    FASTCERT_CHECK_ARG(ex.ndim() == 1 && ex.shape(0) == nq, "exclude must have shape (queries,)");
    const int64_t* e = ex.data();
    for (int64_t i = 0; i < nq; ++i) FASTCERT_CHECK_ARG(e[i] >= -1 && e[i] < nr, "exclude values must be in [-1, references)");
    exp = e;
  }
  F64Out inter(nq), intra(nq);
  I64Arr inter_idx(nq), intra_idx(nq);
  NearestOut out{inter.mutable_data(), inter_idx.mutable_data(), intra.mutable_data(), intra_idx.mutable_data()};
  const T* qp = q.data();
  const T* rp = r.data();
  const int64_t* qlp = qlab.data();
  const int64_t* rlp = rlab.data();
  {
    py::gil_scoped_release nogil;
    if constexpr (std::is_same_v<T, uint8_t>)
      nearest_by_label_u8(qp, nq, rp, nr, d, qlp, rlp, exp, norm, out);
    else
      nearest_by_label_f64(qp, nq, rp, nr, d, qlp, rlp, exp, norm, out);
  }
  return py::make_tuple(inter, inter_idx, intra, intra_idx);
}

void bind(py::module_& m) {
  const char* doc =
      "q: (nq, d), r: (nr, d) uint8 levels or float64; qlab (nq,), rlab (nr,) int64; exclude (nq,) int64 or None;\n"
      "norm 0/1/2 = l1/l2/linf -> (inter, inter_idx, intra, intra_idx): per query the nearest reference with\n"
      "another / the same label (l2 SQUARED; uint8 in level units, exact). Ties -> smallest index; none -> inf, -1.";
  m.def("nearest_by_label", &py_nearest<uint8_t>, py::arg("q").noconvert(), py::arg("r").noconvert(),
        py::arg("qlab").noconvert(), py::arg("rlab").noconvert(), py::arg("exclude") = py::none(), py::arg("norm") = 0, doc);
  m.def("nearest_by_label", &py_nearest<double>, py::arg("q").noconvert(), py::arg("r").noconvert(),
        py::arg("qlab").noconvert(), py::arg("rlab").noconvert(), py::arg("exclude") = py::none(), py::arg("norm") = 0);
  m.def("distances_max_threads", &distances_max_threads);
}

}  // namespace
FASTCERT_REGISTER_BINDINGS(bind);
}  // namespace fastcert
