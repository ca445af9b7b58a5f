"""gpu-audit: what your GPUs really do, and what that costs."""

__version__ = "0.1.0"
