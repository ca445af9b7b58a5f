"""A virtual NVML: pynvml's own marshalling against ctypes callbacks and a simulated host."""
