"""Type stub of the compiled CPU module fastcert._core (csrc/). Entry points take numpy buffers;
shapes and dtypes are checked in C++ too (ValueError / TypeError), never trusted. fastcert._native is the
only importer (and checks every argument first); the CUDA module is described in _core_cuda.pyi."""
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__version__: str
NOISE_GAUSSIAN: int
NOISE_LAPLACE: int
NOISE_UNIFORM: int
NOISE_DISCRETE: int
STRATIFIED_MAX_RADIUS: int
# largest number of coordinates D of one input (2^32: the coordinate's Philox counter word is 32 bits;
# csrc/common/limits.h); sample/noise raise ValueError above it
MAX_COORDINATES: int

def build_info() -> dict: ...
def max_threads() -> int: ...

# x: (D,) float32, out: (B, D) float32, in place: out[s] = x + noise(seed, stream, start + s)
def sample(x: npt.NDArray[np.float32], out: npt.NDArray[np.float32], seed: int, stream: int, start: int,
           noise_type: int, scale: float, keep_thresh: int = 0, K: int = 0) -> None: ...
# out: (B, D) float32 <- the noise alone
def noise(out: npt.NDArray[np.float32], seed: int, stream: int, start: int, noise_type: int, scale: float,
          keep_thresh: int = 0, K: int = 0) -> None: ...
# logits: (B, C) float32|float64, counts: (C,) int64 += argmax counts; returns the number of NaN rows.
# With cls >= 0, score/margin (B,) float32 receive the softmax score of cls and its margin.
def count(logits: npt.NDArray[np.floating], counts: npt.NDArray[np.int64], cls: int = -1,
          score: npt.NDArray[np.float32] | None = None, margin: npt.NDArray[np.float32] | None = None) -> int: ...

# exact stratified (l0) arithmetic; big integers cross as little-endian bytes (see fastcert/smoothing/stratified.py)
def stratified_thresholds(a: bytes, b: bytes, K: bytes, pn: bytes, pd: bytes, radii: Sequence[int]) -> list: ...
def stratified_region_cardinalities(r: int, K: bytes) -> list: ...
def stratified_group_masses(a: bytes, b: bytes, K: bytes, r: int) -> tuple: ...

# blocked nearest-neighbour distances by label (see fastcert/robustness/curves.py):
# q: (nq, F), r: (nr, F) both uint8 or both float64, qlab: (nq,) int64, rlab: (nr,) int64, exclude: None or
# (nq,) int64 (a reference index to skip per query, -1 none), norm: 0 l1 | 1 l2 (squared) | 2 linf
# -> (inter (nq,) float64, inter_index (nq,) int64, intra (nq,) float64, intra_index (nq,) int64)
def nearest_by_label(q: npt.NDArray, r: npt.NDArray, qlab: npt.NDArray[np.int64], rlab: npt.NDArray[np.int64],
                     exclude: npt.NDArray[np.int64] | None = None, norm: int = 0) -> tuple: ...
def distances_max_threads() -> int: ...
