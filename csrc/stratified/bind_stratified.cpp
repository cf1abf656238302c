// pybind11 glue for the exact stratified (l0) computations. Big integers cross the boundary as
// little-endian bytes (Python: int.to_bytes / int.from_bytes), since pybind11 cannot carry integers
// wider than 64 bits. Every argument is checked again here; the work runs without the GIL.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <utility>
#include <vector>

#include "bind_registry.h"
#include "common/check.h"
#include "stratified/stratified.h"

namespace py = pybind11;

namespace fastcert {
namespace {

BigUInt from_py_bytes(const py::bytes& b) {
  const std::string s = b;  // copies; the numbers are small
  return BigUInt::from_bytes_le(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

py::bytes to_py_bytes(const BigUInt& v) {
  const std::vector<uint8_t> raw = v.to_bytes_le();
  return py::bytes(reinterpret_cast<const char*>(raw.data()), raw.size());
}

uint32_t checked_radius(int64_t r, const char* what) {
  FASTCERT_CHECK_ARG(r >= 0, std::string(what) + " must be >= 0");
  FASTCERT_CHECK_ARG(r <= int64_t(stratified::kMaxRadius),
                     std::string(what) + " must be <= " + std::to_string(stratified::kMaxRadius));
  return uint32_t(r);
}

py::list py_region_cardinalities(int64_t r, const py::bytes& K) {
  const uint32_t rr = checked_radius(r, "r");
  const BigUInt k = from_py_bytes(K);
  std::vector<BigUInt> out;
  {
    py::gil_scoped_release nogil;
    out = stratified::region_cardinalities(rr, k);
  }
  py::list result;
  for (const BigUInt& v : out) result.append(to_py_bytes(v));
  return result;
}

py::tuple py_group_masses(const py::bytes& a, const py::bytes& b, const py::bytes& K, int64_t r) {
  const uint32_t rr = checked_radius(r, "r");
  const stratified::DiscreteNoise noise(from_py_bytes(a), from_py_bytes(b), from_py_bytes(K));
  std::vector<BigUInt> coef;
  BigUInt denom;
  {
    py::gil_scoped_release nogil;
    coef = stratified::group_masses(noise, rr, &denom);
  }
  py::list masses;
  for (const BigUInt& v : coef) masses.append(to_py_bytes(v));
  return py::make_tuple(masses, to_py_bytes(denom));
}

py::list py_thresholds(const py::bytes& a, const py::bytes& b, const py::bytes& K, const py::bytes& pn,
                       const py::bytes& pd, const std::vector<int64_t>& radii) {
  const stratified::DiscreteNoise noise(from_py_bytes(a), from_py_bytes(b), from_py_bytes(K));
  const BigUInt p_num = from_py_bytes(pn), p_den = from_py_bytes(pd);
  FASTCERT_CHECK_ARG(!p_num.is_zero() && p_num < p_den, "p must be in (0, 1)");
  std::vector<uint32_t> rs;
  rs.reserve(radii.size());
  for (int64_t r : radii) rs.push_back(checked_radius(r, "radii"));
  std::vector<stratified::Fraction> out;
  {
    py::gil_scoped_release nogil;
    out = stratified::thresholds(noise, p_num, p_den, rs);
  }
  py::list result;
  for (const stratified::Fraction& f : out) result.append(py::make_tuple(to_py_bytes(f.num), to_py_bytes(f.den)));
  return result;
}

void bind_stratified(py::module_& m) {
  m.attr("STRATIFIED_MAX_RADIUS") = stratified::kMaxRadius;
  m.def("stratified_region_cardinalities", &py_region_cardinalities, py::arg("r"), py::arg("K"),
        "|L(u, v; r)| for u = 0..r, v = 0..r-u (row-major over u) as little-endian bytes; K as bytes.");
  m.def("stratified_group_masses", &py_group_masses, py::arg("a"), py::arg("b"), py::arg("K"), py::arg("r"),
        "(masses, D): D * P(group s = j - r | x) for j = 0..2r and D = (bK)^r, alpha = a/b; all bytes.");
  m.def("stratified_thresholds", &py_thresholds, py::arg("a"), py::arg("b"), py::arg("K"), py::arg("pn"),
        py::arg("pd"), py::arg("radii"),
        "[(num, den)] unreduced exact rho_r^{-1}(pn/pd) for each r in radii, alpha = a/b; all bytes.");
}

FASTCERT_REGISTER_BINDINGS(bind_stratified);

}  // namespace
}  // namespace fastcert
