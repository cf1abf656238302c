"""Type stub of the compiled CUDA module fastcert._core_cuda (csrc/bindings_cuda.cpp, csrc/sampling/*.cu),
built only where nvcc was found. Entry points take raw device pointers (ints from Tensor.data_ptr()),
sizes and the caller's CUDA stream handle (torch.cuda.current_stream(device).cuda_stream). C++ checks
only what it can see (null pointers, sizes, D <= MAX_COORDINATES); devices, dtypes, shapes and
contiguity are checked by fastcert._native, the only caller, which also makes the tensors' device current
around every launch."""

def build_info() -> dict: ...  # {"architectures": "80,90", "cuda_runtime": int}
def device_count() -> int: ...

# x: (D,) float32, out: (B, D) float32, both on one device; out[s] = x + noise(seed, stream_tag, start + s)
# (discrete noise: the new grid level / K). start_dev: 0, or a device int64 (1,) added to start (CUDA-graph
# replays advance it, see advance). key_dev: 0, or a device int64 (2,) {seed, stream_tag} used instead of
# seed and stream_tag, so that one captured graph serves every input point.
def sample(x: int, D: int, out: int, B: int, seed: int, stream_tag: int, start: int, noise_type: int,
           scale: float, keep_thresh: int, K: int, stream: int, start_dev: int = 0, key_dev: int = 0) -> None: ...

# counter: device int64 (1,); *counter += by on the stream (one thread; capturable in a CUDA graph)
def advance(counter: int, by: int, stream: int) -> None: ...

# logits: (B, C) of dtype code 0 float32 | 1 float16 | 2 bfloat16 | 3 float64, counts: (C,) int64 += argmax
# counts (ties -> lower index), nan_rows: (1,) int64 += rows containing NaN (not counted); with cls >= 0,
# score/margin: 0 or (B,) float32 <- softmax score of cls / p_cls - max_{j != cls} p_j. All on the device.
def count(logits: int, dtype: int, B: int, C: int, counts: int, nan_rows: int, cls: int, score: int, margin: int,
          stream: int) -> None: ...
