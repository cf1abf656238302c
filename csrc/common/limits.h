// Size limits shared by every entry point (CPU and CUDA bindings) and exported to Python as
// fastcert._core.MAX_COORDINATES, so that the limit is one number checked in one way.
#pragma once
#include <cstdint>

#include "common/check.h"

namespace fastcert {

// Largest number of coordinates D of one input. Why 2^32: the Philox counter word that names a
// coordinate is 32 bits wide; discrete noise puts the coordinate index j < D there and continuous
// noise its group j / 4, so D <= 2^32 keeps every coordinate's counter distinct for both noises
// (a larger D would silently reuse the noise of coordinate j - 2^32).
constexpr int64_t kMaxCoordinates = int64_t(1) << 32;

// The one check of D against kMaxCoordinates (throws std::invalid_argument -> Python ValueError).
inline void check_coordinates(int64_t D) {
  FASTCERT_CHECK_ARG(D >= 0 && D <= kMaxCoordinates,
                     "x has more than MAX_COORDINATES = 2^32 coordinates (the noise counter is 32 bits wide)");
}

}  // namespace fastcert
