// Minimal check macro for the C++ tests (plain executables under ctest, no test framework): a failed
// check is reported with file and line and counted; main() returns non-zero if any failed.
#pragma once
#include <cstdio>

static int failures = 0;
#define EXPECT(cond)                                                                  \
  do {                                                                                \
    if (!(cond)) {                                                                    \
      std::fprintf(stderr, "%s:%d: EXPECT failed: %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                                     \
    }                                                                                 \
  } while (0)
