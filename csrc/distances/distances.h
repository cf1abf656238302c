// Nearest-neighbour distances between two point sets in l1, l2 and linf, split by label: for every
// query, the nearest reference point with ANOTHER label ("inter") and with the SAME label ("intra"),
// optionally skipping one reference index per query (the query itself when both sets coincide).
//
// Two element types:
//   uint8  — images on the grid {0, 1/255, ..., 1} stored as their levels 0..255. Sums are computed in
//            integers, so the results are exact: l1 = sum |a-b|, l2 = sum (a-b)^2 (SQUARED), linf = max |a-b|,
//            all in level units (divide by 255, and take the square root for l2, to get [0,1] units).
//   double — arbitrary data; l2 is again returned squared. Accumulation in double.
// Ties: the smallest reference index wins (each query is scanned in increasing reference order by one
// thread), so the output does not depend on the number of threads or on the blocking.
//
// Shapes: q (nq, d) row-major, r (nr, d) row-major, qlab (nq,), rlab (nr,), exclude (nq,) with values in
// [-1, nr) or nullptr; outputs inter/intra (nq,) double and inter_idx/intra_idx (nq,) int64 (-1 and
// +infinity when no such reference point exists).
#pragma once
#include <cstdint>

namespace fastcert {

enum DistNorm : int { kDistL1 = 0, kDistL2 = 1, kDistLinf = 2 };

struct NearestOut {
  double* inter;
  int64_t* inter_idx;
  double* intra;
  int64_t* intra_idx;
};

void nearest_by_label_u8(const uint8_t* q, int64_t nq, const uint8_t* r, int64_t nr, int64_t d,
                         const int64_t* qlab, const int64_t* rlab, const int64_t* exclude, int norm,
                         NearestOut out);
void nearest_by_label_f64(const double* q, int64_t nq, const double* r, int64_t nr, int64_t d,
                          const int64_t* qlab, const int64_t* rlab, const int64_t* exclude, int norm,
                          NearestOut out);

// Single pair, same conventions (l2 squared); the reference the blocked kernel is tested against.
double pair_distance_u8(const uint8_t* a, const uint8_t* b, int64_t d, int norm);
double pair_distance_f64(const double* a, const double* b, int64_t d, int norm);

int distances_max_threads();

}  // namespace fastcert
