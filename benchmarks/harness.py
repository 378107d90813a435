"""Measurement helpers shared by the benchmarks: wall-clock timing with device sync, peak memory, machine facts."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import statistics
import threading
import time
from contextlib import contextmanager

import torch


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so that a wall clock around it measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device):
    """Run fn() once -> (its result, wall seconds), synchronising the device before and after."""
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return result, time.perf_counter() - start


def summary(runs: list) -> float:
    """The number a ratio is taken from: the median of repeated runs (the run itself when there is one)."""
    return statistics.median(runs)


def _rss_bytes() -> int:
    """Resident set size of this process now (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _trim_heap() -> None:
    """Hand freed heap pages back to the OS (glibc), so that a later run's RSS growth is its own."""
    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: RSS then over-counts nothing, it may only under-count
        pass


class PeakMemory:
    """Peak memory of the code inside `with PeakMemory(device) as peak:`; afterwards `peak.bytes`.

    CUDA: `torch.cuda.max_memory_allocated` over the block (everything allocated on the device, weights included).
    CPU: PyTorch keeps no allocator statistics, so the resident set size is sampled every `interval` seconds and
    `bytes` is the growth over the RSS at entry (the block's transient memory); add the weights it uses to get the
    footprint of a run. Sampling can miss a peak shorter than the interval; UNet activations live much longer.
    """

    def __init__(self, device: torch.device, interval: float = 0.002):
        self.device = torch.device(device)
        self.interval = interval
        self.bytes = 0
        self._stop = threading.Event()
        self._peak = 0

    def __enter__(self):
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            _trim_heap()
            self._start = _rss_bytes()
            self._peak = self._start
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self._peak = max(self._peak, _rss_bytes())
            time.sleep(self.interval)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            synchronize(self.device)
            self.bytes = int(torch.cuda.max_memory_allocated(self.device))
        else:
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, _rss_bytes())
            self.bytes = int(self._peak - self._start)
        return False


def tensor_bytes(tensors) -> int:
    """Bytes held by distinct tensors (shared storage counted once)."""
    seen, total = set(), 0
    for t in tensors:
        if t is None or t.device.type == "meta":
            continue
        key = (t.untyped_storage().data_ptr(), t.device)
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total


def machine_info(device: torch.device) -> dict:
    """What the numbers were measured on."""
    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu": _cpu_name(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    try:
        info["load_average_1min"] = os.getloadavg()[0]
    except OSError:
        pass
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = props.name
        info["gpu_memory_bytes"] = int(props.total_memory)
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


@contextmanager
def inference():
    """No autograd bookkeeping while measuring."""
    with torch.inference_mode():
        yield
