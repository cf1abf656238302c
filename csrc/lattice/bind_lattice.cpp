// pybind11 glue for the lattice sampler (sound smoothing). Every size, index range and the table's order
// are checked here again (fastcert._native checks first), so no call can read or write outside a buffer.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdlib>

#include "bind_registry.h"
#include "common/check.h"
#include "lattice/lattice.h"

namespace py = pybind11;

namespace fastcert {
namespace {

using FArr = py::array_t<float, py::array::c_style>;
using I64Arr = py::array_t<int64_t, py::array::c_style>;
using U64Arr = py::array_t<uint64_t, py::array::c_style>;

constexpr int64_t kMaxTable = int64_t(1) << 30;   // the guide stores int32 indices
constexpr int64_t kExact = int64_t(1) << 52;      // integers below 2^53 are exact doubles

void check_table(const U64Arr& thr, int64_t j_min) {
  FASTCERT_CHECK_ARG(thr.ndim() == 1, "thresholds must be 1-D");
  const int64_t N = thr.shape(0);
  FASTCERT_CHECK_ARG(N >= 1 && N < kMaxTable, "thresholds must have between 1 and 2^30 entries");
  FASTCERT_CHECK_ARG(j_min > -kExact && j_min < kExact && j_min + N < kExact, "j_min out of range");
  const uint64_t* t = thr.data();
  for (int64_t i = 1; i < N; ++i) FASTCERT_CHECK_ARG(t[i - 1] <= t[i], "thresholds must be non-decreasing");
}

void py_lattice_sample(I64Arr base, FArr out, uint64_t seed, uint32_t stream, uint64_t start, U64Arr thr,
                       int64_t j_min, int64_t denom) {
  FASTCERT_CHECK_ARG(base.ndim() == 1, "base must be 1-D (flattened input)");
  FASTCERT_CHECK_ARG(out.ndim() == 2, "out must be 2-D (batch, D)");
  FASTCERT_CHECK_ARG(out.shape(1) == base.shape(0), "out.shape[1] must equal base.size");
  FASTCERT_CHECK_ARG(base.shape(0) < (int64_t(1) << 33), "base is too large for the counter layout");
  FASTCERT_CHECK_ARG(out.writeable(), "out must be writeable");
  FASTCERT_CHECK_ARG(denom >= 1 && denom < kExact, "denom must be in [1, 2^52)");
  check_table(thr, j_min);
  const int64_t D = base.shape(0), B = out.shape(0), N = thr.shape(0);
  FASTCERT_CHECK_ARG(B == 0 || start + static_cast<uint64_t>(B) - 1 >= start, "start + batch overflows 2^64");
  const int64_t* bp = base.data();
  const int64_t bound = kExact - std::llabs(j_min) - N;
  for (int64_t j = 0; j < D; ++j) FASTCERT_CHECK_ARG(bp[j] > -bound && bp[j] < bound, "base value out of range");
  float* op = out.mutable_data();
  const uint64_t* tp = thr.data();
  py::gil_scoped_release nogil;
  lattice_sample_cpu(bp, D, op, B, seed, stream, start, tp, N, j_min, denom);
}

void py_lattice_offsets(I64Arr out, uint64_t seed, uint32_t stream, uint64_t start, U64Arr thr, int64_t j_min) {
  FASTCERT_CHECK_ARG(out.ndim() == 2, "out must be 2-D (batch, D)");
  FASTCERT_CHECK_ARG(out.shape(1) < (int64_t(1) << 33), "out is too wide for the counter layout");
  FASTCERT_CHECK_ARG(out.writeable(), "out must be writeable");
  check_table(thr, j_min);
  const int64_t D = out.shape(1), B = out.shape(0), N = thr.shape(0);
  FASTCERT_CHECK_ARG(B == 0 || start + static_cast<uint64_t>(B) - 1 >= start, "start + batch overflows 2^64");
  int64_t* op = out.mutable_data();
  const uint64_t* tp = thr.data();
  py::gil_scoped_release nogil;
  lattice_offsets_cpu(D, op, B, seed, stream, start, tp, N, j_min);
}

void bind(py::module_& m) {
  // noconvert: a float64 or int32 array is an error, never a silent copy into the wrong buffer
  m.def("lattice_sample", &py_lattice_sample, py::arg("base").noconvert(), py::arg("out").noconvert(),
        py::arg("seed"), py::arg("stream"), py::arg("start"), py::arg("thresholds").noconvert(), py::arg("j_min"),
        py::arg("denom"),
        "base: (D,) int64, out: (B, D) float32 <- float32((base + J) / denom), J = j_min + #{thresholds <= U} "
        "for a 64-bit Philox uniform U per (sample start + b, coordinate). In place.");
  m.def("lattice_offsets", &py_lattice_offsets, py::arg("out").noconvert(), py::arg("seed"), py::arg("stream"),
        py::arg("start"), py::arg("thresholds").noconvert(), py::arg("j_min"),
        "out: (B, D) int64 <- the offsets J alone (same uniforms as lattice_sample).");
  m.attr("LATTICE_GUIDE_BITS") = kLatticeGuideBits;
}

}  // namespace
FASTCERT_REGISTER_BINDINGS(bind);
}  // namespace fastcert
