"""vae.resources.ResourceMeter: what a trial's process used over an epoch."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest
import torch

from vae import keys
from vae.resources import ResourceMeter

CPU = torch.device("cpu")


def _measure(work, cpus_granted: float = 1.0) -> dict[str, float]:
    meter = ResourceMeter(CPU, cpus_granted)
    meter.start()
    work()
    return meter.read()


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_cpu_use_tells_a_busy_epoch_from_a_starved_one():
    busy = _measure(lambda: _spin(0.4), cpus_granted=2)
    idle = _measure(lambda: time.sleep(0.4), cpus_granted=2)
    assert busy[keys.SYSTEM_CPU_CORES] > 0.5  # one thread spinning: about one core
    assert idle[keys.SYSTEM_CPU_CORES] < 0.2  # waiting uses none
    for reading in (busy, idle):  # the share of the cores Ray granted (2 here)
        assert reading[keys.SYSTEM_CPU_PERCENT] == pytest.approx(
            50 * reading[keys.SYSTEM_CPU_CORES])
    assert keys.SYSTEM_GPU_MEMORY_PEAK_MB not in busy and keys.SYSTEM_GPU_PERCENT not in busy


def _multiply(seconds: float) -> None:  # torch releases the GIL: threads really run at once
    a = torch.rand(256, 256)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        a @ a


def test_threads_count_towards_the_cores_used():
    def two_threads() -> None:
        other = threading.Thread(target=_multiply, args=(0.6,))
        other.start()
        _multiply(0.6)
        other.join()

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # torch's own pool would blur the count
    try:
        one = _measure(lambda: _multiply(0.6))
        two = _measure(two_threads)
    finally:
        torch.set_num_threads(threads)
    assert two[keys.SYSTEM_CPU_CORES] > one[keys.SYSTEM_CPU_CORES] * 1.2, (one, two)


def test_peak_memory_is_the_epochs_own_peak_in_megabytes():
    # A fresh process whose earlier peak (a freed 1.5 GiB block, as a previous trial in a reused
    # Tune actor would leave) must not show in the next epoch's figure.
    code = ("import json, numpy as np, torch\n"
            "from vae.resources import ResourceMeter\n"
            "earlier = np.ones(1536 * 2**20, dtype=np.uint8); del earlier\n"
            "meter = ResourceMeter(torch.device('cpu'), 1.0)\n"
            "meter.start()\n"
            "block = np.ones(300 * 2**20, dtype=np.uint8)\n"
            "print(json.dumps(meter.read()))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    reading = json.loads(done.stdout.strip().splitlines()[-1])
    assert 300 * 2**20 / 1e6 < reading[keys.SYSTEM_MEMORY_PEAK_MB] < 1300


class FakeCuda:
    """torch.cuda's memory and NVML queries, as on a GPU (none here); a fault-free stand-in."""

    def __init__(self, utilization: list[float] | None) -> None:
        self.values, self.calls, self.resets = utilization, 0, 0
        self.answers: list[float] = []

    def install(self, monkeypatch) -> None:
        monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", self._reset)
        monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: 300 * 10**6)
        monkeypatch.setattr(torch.cuda, "utilization", self._utilization)

    def _reset(self, device) -> None:
        self.resets += 1

    def _utilization(self, device) -> float:
        if self.values is None:
            raise RuntimeError("pynvml does not seem to be installed")
        value = self.values[self.calls % len(self.values)]
        self.calls += 1
        self.answers.append(value)
        return value


def test_on_cuda_gpu_memory_and_utilisation_are_averaged_over_the_epoch(monkeypatch):
    fake = FakeCuda([40.0, 90.0, 20.0])
    fake.install(monkeypatch)
    meter = ResourceMeter(torch.device("cuda", 0), 1.0, interval_s=0.01)
    meter.start()  # answer 1: the probe that NVML is readable
    time.sleep(0.2)
    reading = meter.read()
    assert fake.resets == 1 and reading[keys.SYSTEM_GPU_MEMORY_PEAK_MB] == 300
    sampled = fake.answers[1:]  # the sampler's readings, the probe's left out
    assert len(set(sampled)) > 1  # several different readings, so the mean is exercised
    assert reading[keys.SYSTEM_GPU_PERCENT] == pytest.approx(sum(sampled) / len(sampled))
    assert not meter.close()  # read() stopped the sampler
    assert not any(t.name == "aitexvae-gpu-sampler" for t in threading.enumerate())


def test_without_nvml_there_is_no_utilisation_figure_and_no_sampler(monkeypatch):
    FakeCuda(None).install(monkeypatch)
    meter = ResourceMeter(torch.device("cuda", 0), 1.0, interval_s=0.01)
    meter.start()
    assert not any(t.name == "aitexvae-gpu-sampler" for t in threading.enumerate())
    reading = meter.read()
    assert reading[keys.SYSTEM_GPU_MEMORY_PEAK_MB] == 300
    assert keys.SYSTEM_GPU_PERCENT not in reading


def test_a_sampler_that_outlives_its_join_never_writes_into_the_next_epoch(monkeypatch):
    fake = FakeCuda([50.0])
    fake.install(monkeypatch)
    meter = ResourceMeter(torch.device("cuda", 0), 1.0, interval_s=0.01)
    meter.start()
    first_samples, first_stop = meter._samples, meter._stop
    meter.start()  # a new epoch without read(): the old sampler is stopped first
    assert first_stop.is_set() and meter._samples is not first_samples
    meter.read()
