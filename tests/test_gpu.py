"""The CUDA path: placement of the patches, the memory share, the precision rule, and scores that
do not depend on the device. Marked ``gpu``: deselected (not skipped, not counted) where CUDA is
absent (``tests/conftest.py``); ``bench/gpu_check.sh`` runs them on a GPU machine."""

from __future__ import annotations

import copy
import importlib.util

import numpy as np
import pytest
import torch

from search.trainable import DATA_SHARE_OF_DEVICE, TrialData, claim_gpu
from tests.support.checkpoints import make_model, tiny_config, validation_set
from vae.score import score_patches
from vae.score.scorers import candidates
from vae.train import autocast_dtype, make_optimizer, place_images, train_epoch
from vae.validation import validation_pass

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda", 0)


def _patches(count: int = 32) -> np.ndarray:
    images, _ = validation_set(normal=count, defect=0, seed=3)
    return images


def test_patches_go_to_the_device_when_they_fit_and_to_pinned_memory_when_not():
    images = torch.from_numpy(_patches())
    assert place_images(images, CUDA, budget_bytes=images.numel()).device.type == "cuda"
    assert place_images(images, CUDA, budget_bytes=images.numel() - 1) is images  # stays put
    data = TrialData(_patches(), _patches(8), np.zeros(8, int))
    train, val, real = data.tensors(CUDA, budget_bytes=_patches().size)  # room for train only
    assert train.device.type == "cuda" and val.device.type == "cpu" and real is None
    # A device named without an index still indexes there (tensors report cuda:0).
    model = make_model(tiny_config(), seed=0)
    train_epoch(model, make_optimizer(model.to("cuda"), tiny_config().train), train,
                tiny_config(), torch.device("cuda"))


@pytest.mark.parametrize("augment", [False, True])
@pytest.mark.parametrize("on_device", [True, False])
def test_an_epoch_waits_for_the_device_only_once(augment, on_device):
    """cuda's sync debug mode warns on every host-device synchronisation: one is the read-back
    of the epoch's sums (a host-resident set only adds asynchronous pinned copies)."""
    import warnings

    overrides = {"train.batch_size": 4}
    if augment:
        overrides |= {"train.denoise_probability": 0.5, "train.flip": "both"}
    config = tiny_config(**overrides)
    model = make_model(config, seed=0).to(CUDA)
    optimizer = make_optimizer(model, config.train)
    images = place_images(torch.from_numpy(_patches()), CUDA, 1 << 30 if on_device else 0)
    train_epoch(model, optimizer, images, config, CUDA)  # warm-up: cuDNN, allocator
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            train_epoch(model, optimizer, images, config, CUDA, epoch=1)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
    assert len(syncs) == 1, [str(w.message) for w in syncs]


@pytest.fixture()
def deterministic_cudnn():
    flags = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags


def test_training_from_device_patches_equals_training_from_host_patches(deterministic_cudnn):
    config = tiny_config(**{"train.batch_size": 8, "train.precision": "off",
                            "train.denoise_probability": 0.5, "train.flip": "both"})
    results = []
    for budget in (1 << 30, 0):
        model = make_model(config, seed=0).to(CUDA)
        images = place_images(torch.from_numpy(_patches()), CUDA, budget)
        metrics = train_epoch(model, make_optimizer(model, config.train), images, config, CUDA)
        results.append(({k: v for k, v in metrics.items() if "_s" not in k},
                        [p.detach().cpu() for p in model.parameters()]))
    assert results[0][0] == results[1][0]
    for on_device, from_host in zip(results[0][1], results[1][1], strict=True):
        assert torch.equal(on_device, from_host)


def test_a_trial_is_capped_to_its_share_and_starts_with_an_empty_cache(deterministic_cudnn):
    hoard = torch.empty(256 << 20, dtype=torch.uint8, device=CUDA)  # a previous trial's blocks
    del hoard
    assert torch.cuda.memory_reserved(CUDA) >= 256 << 20  # cached, not handed back
    try:
        device, budget = claim_gpu(0.25)
        assert device == CUDA and torch.cuda.memory_reserved(CUDA) < 256 << 20
        assert torch.cuda.get_per_process_memory_fraction(CUDA) == pytest.approx(0.25)
        total = torch.cuda.get_device_properties(CUDA).total_memory
        assert budget == int(total * 0.25 * DATA_SHARE_OF_DEVICE)
        assert torch.backends.cudnn.benchmark  # (the fixture restores it)
        with pytest.raises(torch.OutOfMemoryError):  # more than the share is refused
            torch.empty(int(total * 0.3), dtype=torch.uint8, device=CUDA)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, CUDA)


def test_auto_precision_follows_native_bf16():
    major, _ = torch.cuda.get_device_capability(CUDA)
    assert autocast_dtype("auto", CUDA) == (torch.bfloat16 if major >= 8 else None)  # Ampere+


def test_scores_and_validation_agree_across_devices_and_training_precision():
    config = tiny_config(**{"train.precision": "bf16", "score.select": "best",
                            "train.batch_size": 4})
    images, labels = validation_set(normal=8, defect=8)
    gpu_model = make_model(config, seed=5).to(CUDA)
    train_epoch(gpu_model, make_optimizer(gpu_model, config.train), images[labels == 0],
                config, CUDA)  # trained in bf16 on the GPU
    cpu_model = copy.deepcopy(gpu_model).cpu()
    cpu_scores, _ = score_patches(cpu_model, images, keep_maps=False)
    gpu_scores, _ = score_patches(gpu_model, images, keep_maps=False)
    # fp32 with TF32 off on both: only the kernels' summation order differs.
    np.testing.assert_allclose(gpu_scores, cpu_scores, rtol=1e-4, atol=1e-6)
    scorers = candidates(config.score)
    on_cpu = validation_pass(cpu_model, images, scorers, labels == 0)
    on_gpu = validation_pass(gpu_model, torch.from_numpy(images).to(CUDA), scorers, labels == 0)
    for name in scorers:
        np.testing.assert_allclose(on_gpu[1][name], on_cpu[1][name], rtol=1e-4, atol=1e-6)
    for key, value in on_cpu[0].items():
        assert on_gpu[0][key] == pytest.approx(value, rel=1e-4), key


def test_the_resource_meter_reads_this_trials_gpu_memory_and_the_devices_utilisation():
    from vae import keys
    from vae.resources import ResourceMeter

    meter = ResourceMeter(CUDA, cpus_granted=1.0, interval_s=0.1)
    meter.start()
    block = torch.ones(64, 2**20, device=CUDA)  # 256 MiB of float32
    end = torch.cuda.Event(enable_timing=False)
    for _ in range(200):  # keep the device busy for a few sampling periods
        block.mul_(1.0)
    end.record()
    end.synchronize()
    reading = meter.read()
    assert reading[keys.SYSTEM_GPU_MEMORY_PEAK_MB] >= 256 * 2**20 / 1e6
    if importlib.util.find_spec("pynvml") is not None:  # the gpu extra: NVML must be read
        assert 0 <= reading[keys.SYSTEM_GPU_PERCENT] <= 100
    else:
        assert keys.SYSTEM_GPU_PERCENT not in reading
    assert not meter.close()
