// fastcert._core: the CPU extension. No torch here: entry points take numpy buffers.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bind_registry.h"

#ifndef FASTCERT_VERSION
#define FASTCERT_VERSION "dev"
#endif

namespace py = pybind11;

PYBIND11_MODULE(_core, m) {
  m.doc() = "fastcert compiled CPU core (sampling kernels, exact stratified arithmetic)";
  m.attr("__version__") = FASTCERT_VERSION;
  m.def("build_info", []() {
    py::dict d;
#ifdef FASTCERT_OPENMP
    d["openmp"] = true;
#else
    d["openmp"] = false;
#endif
#if defined(__clang__)
    d["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
    d["compiler"] = std::string("gcc ") + __VERSION__;
#else
    d["compiler"] = std::string("unknown");
#endif
    return d;
  });
  for (auto fn : fastcert::binding_registry()) fn(m);
}
