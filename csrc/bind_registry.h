// Each csrc/<capability>/bind_*.cpp registers its pybind11 definitions here with a static
// FASTCERT_REGISTER_BINDINGS(fn); csrc/bindings.cpp runs them all when _core is imported, so adding
// a capability never edits a shared file.
#pragma once
#include <pybind11/pybind11.h>
#include <vector>

namespace fastcert {
using BindFn = void (*)(pybind11::module_&);
inline std::vector<BindFn>& binding_registry() {
  static std::vector<BindFn> fns;
  return fns;
}
struct RegisterBindings {
  explicit RegisterBindings(BindFn fn) { binding_registry().push_back(fn); }
};
}  // namespace fastcert

#define FASTCERT_REGISTER_BINDINGS_CAT2(a, b) a##b
#define FASTCERT_REGISTER_BINDINGS_CAT(a, b) FASTCERT_REGISTER_BINDINGS_CAT2(a, b)
#define FASTCERT_REGISTER_BINDINGS(fn) \
  static ::fastcert::RegisterBindings FASTCERT_REGISTER_BINDINGS_CAT(fastcert_reg_, __LINE__)(fn)
