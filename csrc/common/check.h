// Argument checks for the compiled core. Python validates first; these are the last line of
// defence so that a bad call becomes a Python exception, never a crash.
#pragma once
#include <stdexcept>
#include <string>

#define FASTCERT_CHECK_ARG(cond, msg)                                                   \
  do {                                                                                  \
    if (!(cond)) throw std::invalid_argument(std::string("fastcert._core: ") + (msg)); \
  } while (0)
