"""What was compiled, and which backends are usable here (``fastcert.build_info()``)."""
from __future__ import annotations

import importlib.util

from fastcert import _core

try:  # the CUDA module exists only where nvcc was found at build time
    from fastcert import _core_cuda
except ImportError:  # pragma: no cover - depends on the build
    _core_cuda = None


def build_info() -> dict:
    """Return a dict describing the compiled modules and optional backends.

    Keys: ``version``, ``cpu`` (compiler, OpenMP, threads), ``cuda_module`` (None when _core_cuda
    was not built, else its architectures and runtime version), ``cuda_devices`` (visible to the
    CUDA module), ``torch_cuda`` (torch sees a GPU), ``triton`` (importable).
    """
    import torch

    cpu = dict(_core.build_info())
    cpu["threads"] = _core.max_threads()
    info = {
        "version": _core.__version__,
        "cpu": cpu,
        "cuda_module": None,
        "cuda_devices": 0,
        "torch_cuda": bool(torch.cuda.is_available()),
        "triton": importlib.util.find_spec("triton") is not None,
    }
    if _core_cuda is not None:
        info["cuda_module"] = dict(_core_cuda.build_info())
        info["cuda_devices"] = int(_core_cuda.device_count())
    return info
