"""Triton kernels for IBP on GPUs (tested under ``TRITON_INTERPRET=1`` on a CPU machine)."""
