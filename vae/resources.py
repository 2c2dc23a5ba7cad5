"""What a trial's process used over one epoch: CPU cores, peak memory and, on CUDA, GPU memory
and utilisation, so a user sees whether trials were starved (metric names in ``vae.keys``).

CPU use is this process's CPU time (every thread: torch's intra-op pool included) over wall
time, also as a share of the cores the trial was granted: 100 % means it kept all of them busy,
much less means it waited (on data, on a shared GPU, on a crowded node). GPU utilisation is what
NVML reports for the whole device, which the trials sharing it (``--gpus-per-trial 0.25``)
share too; it is sampled every ``interval_s`` in a daemon thread and averaged, and left out
where NVML cannot be read (``pip install nvidia-ml-py``, the ``gpu`` extra, makes it readable).
Peak memory is the epoch's own on Linux (the peak RSS is reset at ``start`` through
``/proc/self/clear_refs``): Tune reuses a trial's process for the next trial, whose figure must
not be the previous one's peak. Elsewhere it is the process's lifetime peak (``ru_maxrss``).
Standard library + torch only.
"""

from __future__ import annotations

import contextlib
import re
import resource
import sys
import threading
import time
from pathlib import Path

import torch

from vae import keys

# ru_maxrss is KiB on Linux, bytes on macOS.
_MAXRSS_BYTES = 1 if sys.platform == "darwin" else 1024
_MB = 1e6  # as MLflow's system metrics count megabytes
_PROC = Path("/proc/self")


class ResourceMeter:
    """``start()`` at an epoch's beginning, ``read()`` at its end: ``{"system/...": float}``."""

    def __init__(self, device: torch.device, cpus_granted: float, interval_s: float = 1.0
                 ) -> None:
        self.device, self.interval_s = device, interval_s
        self.cpus_granted = max(cpus_granted, 1e-9)
        self._wall = self._cpu = 0.0
        self._samples: list[float] = []
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None

    def start(self) -> None:
        self.close()  # a sampler left from an epoch that was never read
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        _reset_peak_rss()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            if _gpu_utilization(self.device) is not None:  # NVML readable: sample it
                # The thread gets its own event and list: one that outlives its join (a hung
                # NVML call) must never write into a later epoch's samples.
                self._samples, self._stop = [], threading.Event()
                self._sampler = threading.Thread(target=self._sample, daemon=True,
                                                 args=(self._stop, self._samples),
                                                 name="aitexvae-gpu-sampler")
                self._sampler.start()

    def read(self) -> dict[str, float]:
        wall = max(time.perf_counter() - self._wall, 1e-9)
        cores = (time.process_time() - self._cpu) / wall
        metrics = {keys.SYSTEM_CPU_CORES: cores,
                   keys.SYSTEM_CPU_PERCENT: 100.0 * cores / self.cpus_granted,
                   keys.SYSTEM_MEMORY_PEAK_MB: _peak_rss_bytes() / _MB}
        if self.device.type == "cuda":
            metrics[keys.SYSTEM_GPU_MEMORY_PEAK_MB] = \
                torch.cuda.max_memory_allocated(self.device) / _MB
            if self.close() and self._samples:
                metrics[keys.SYSTEM_GPU_PERCENT] = sum(self._samples) / len(self._samples)
        return metrics

    def close(self) -> bool:
        """Stop the GPU sampler, if one runs; True when one did."""
        if self._sampler is None:
            return False
        self._stop.set()
        self._sampler.join(timeout=2 * self.interval_s + 1)
        self._sampler = None
        return True

    def _sample(self, stop: threading.Event, samples: list[float]) -> None:
        # The first reading after one period: NVML's first answer covers the time before.
        while not stop.wait(self.interval_s):
            value = _gpu_utilization(self.device)
            if value is not None:
                samples.append(value)


def _reset_peak_rss() -> None:
    # Linux >= 4.0: reset VmHWM to the current RSS; elsewhere the peak stays the lifetime one.
    with contextlib.suppress(OSError):
        (_PROC / "clear_refs").write_text("5")


def _peak_rss_bytes() -> float:
    try:
        found = re.search(r"^VmHWM:\s+(\d+) kB", (_PROC / "status").read_text(), re.MULTILINE)
    except OSError:
        found = None
    if found:
        return int(found.group(1)) * 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _MAXRSS_BYTES


def _gpu_utilization(device: torch.device) -> float | None:
    try:
        return float(torch.cuda.utilization(device))
    except Exception:  # noqa: BLE001 - no NVML (pynvml missing, a driver without it): no figure
        return None
