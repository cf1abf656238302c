// The coordinate limit (common/limits.h): one number, checked by one function, that matches the width
// of the Philox counter word naming a coordinate, so that no two coordinates share their noise.
#include <cstdint>
#include <cstdio>
#include <limits>
#include <stdexcept>

#include "common/limits.h"
#include "expect.h"
#include "sampling/noise_math.h"

using namespace fastcert;

static bool rejects(int64_t D) {
  try {
    check_coordinates(D);
  } catch (const std::invalid_argument&) {
    return true;
  }
  return false;
}

// The index of the last coordinate (discrete noise) and of its group of four (continuous noise) fit
// the 32-bit counter word exactly.
static_assert(kMaxCoordinates - 1 == int64_t(std::numeric_limits<uint32_t>::max()),
              "the last coordinate index must be the largest 32-bit counter word");
static_assert((kMaxCoordinates - 1) / 4 <= int64_t(std::numeric_limits<uint32_t>::max()),
              "the last group index must fit the 32-bit counter word");

int main() {
  EXPECT(!rejects(0));
  EXPECT(!rejects(1));
  EXPECT(!rejects(kMaxCoordinates));
  EXPECT(rejects(kMaxCoordinates + 1));
  EXPECT(rejects(int64_t(1) << 34));  // the old, too loose bound of the bindings
  EXPECT(rejects(-1));
  // the last admissible coordinate draws different words from coordinate 0 (no wrap-around)
  const U32x4 first = noise_words(7, 1, 3, 0u);
  const U32x4 last = noise_words(7, 1, 3, static_cast<uint32_t>(kMaxCoordinates - 1));
  EXPECT(first.v[0] != last.v[0] || first.v[1] != last.v[1] || first.v[2] != last.v[2] || first.v[3] != last.v[3]);
  if (failures) {
    std::fprintf(stderr, "%d failures\n", failures);
    return 1;
  }
  std::printf("test_limits: all passed\n");
  return 0;
}
