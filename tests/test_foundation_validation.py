"""vae.validation: one forward pass per patch gives the losses and every scorer's scores, in fp32
whatever the training precision, and leaves the model, its mode and the global RNG alone."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

import vae
from search.trainable import validate
from tests.support.checkpoints import make_model, tiny_config, validation_set
from vae import keys
from vae.losses import vae_loss
from vae.model import VAEOutput
from vae.pixels import to_model_input
from vae.score import score_patches
from vae.score.reference import StripLayout, layout_scores, signed_residuals, strip_scores
from vae.score.scorers import NAMES, STRIP_REFERENCE, candidates, score_candidates
from vae.train import make_optimizer, train_epoch
from vae.validation import validation_pass

CPU = torch.device("cpu")


def _per_patch(config):
    return candidates(config.score, reference=False)  # these patches have no strips


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


class PassCounter:
    """Counts the patches that go through the encoder and the decoder (forward hooks)."""

    def __init__(self, model) -> None:
        self.encoded = self.decoded = 0
        model.encoder.register_forward_hook(self._count("encoded"))
        model.decoder.register_forward_hook(self._count("decoded"))

    def _count(self, attribute: str):
        def hook(module, inputs, output):
            setattr(self, attribute, getattr(self, attribute) + inputs[0].shape[0])
        return hook


def test_losses_and_scores_come_from_one_encode_and_one_decode_per_patch():
    config = tiny_config(**{"score.select": "best"})  # every scorer of the set, still one pass
    model = make_model(config, seed=1)
    images, labels = validation_set(normal=7, defect=5)
    counter = PassCounter(model)
    side = images.shape[-1]
    layout = StripLayout(np.repeat([0, 1], 6), np.array([(side * (i % 6), 0) for i in range(12)]))
    metrics, scores = validation_pass(model, images, candidates(config.score), labels == 0,
                                      layout=layout, batch_size=4)
    assert (counter.encoded, counter.decoded) == (12, 12)  # the strip reference adds no pass
    assert set(metrics) == {keys.VAL_LOSS, keys.VAL_KL, keys.VAL_MSE}
    assert set(scores) == set(NAMES) and all(s.shape == (12,) for s in scores.values())
    # Through the trainable's validate, with the real-defect patches too: still once each.
    counter.encoded = counter.decoded = 0
    real = (torch.from_numpy(images[:6]), labels[:6].copy())
    validate(model, torch.from_numpy(images), labels, config, real)
    assert (counter.encoded, counter.decoded) == (12 + 6, 12 + 6)


def test_a_validation_pass_leaves_out_the_background_as_aitexvae_score_does():
    # Where the fabric ends, validation and scoring must drop the same windows, or a champion's
    # val/auroc would describe another scorer than the one it is pulled with.
    config = tiny_config(**{"score.select": "best"})
    model = make_model(config, seed=4)
    images, _ = validation_set(normal=8, defect=0)
    images[4, :, :, 4:6] = 255  # the fabric's edge line, near where strip 1 begins
    side = images.shape[-1]
    layout = StripLayout(np.repeat([0, 1], 4), np.array([(side * (i % 4), 0) for i in range(8)]))
    reference = {STRIP_REFERENCE: candidates(config.score)[STRIP_REFERENCE]}
    got = score_candidates(model, images, reference, layout=layout)[STRIP_REFERENCE]
    residuals, clipped = signed_residuals(model, images)
    assert np.flatnonzero(clipped.any(1)).tolist() == [4]
    name = reference[STRIP_REFERENCE].reference
    np.testing.assert_array_equal(
        got, layout_scores(residuals, layout, reference=name, clipped=clipped))
    blind = layout_scores(residuals, layout, reference=name)
    assert got[4] < blind[4] and np.array_equal(got[:4], blind[:4])
    # Found along the strip, not from the patch's border (format 5's rule sees nothing here).
    assert np.array_equal(layout_scores(residuals, layout, reference="strip_peak",
                                        clipped=clipped), layout_scores(
        residuals, layout, reference="strip_peak"))
    np.testing.assert_allclose(strip_scores(model, images[4:], layout.corners[4:],
                                            reference=name)[0], got[4:], rtol=1e-6)


@pytest.mark.parametrize("overrides", [
    {"loss.fft_weight": 0.5, "model.covariance": "lowrank", "model.rank": 2},
    {"model.tile_size": 32, "model.image_size": 64, "model.covariance": "full"},  # 4 tiles
    {"model.output_activation": "none"},  # BCE on logits
])
def test_the_losses_are_the_training_loss_at_the_posterior_mean_over_the_normal_patches(
        overrides):
    config = tiny_config(**overrides)
    model = make_model(config, seed=2)
    images, labels = validation_set(normal=6, defect=4)
    images = np.tile(images, (1, 1, 2, 2)) if config.model.image_size == 64 else images
    order = np.random.default_rng(1).permutation(len(labels))  # batches mix normal and defect
    images, labels = images[order], labels[order]
    metrics, _ = validation_pass(model, images, _per_patch(config), labels == 0,
                                 batch_size=4)
    with torch.inference_mode():
        x = to_model_input(torch.from_numpy(images[labels == 0]), config.model.input_range)
        posterior = model.encode(x)
        recon, logits = model.decode(posterior.mean)
        terms = vae_loss(VAEOutput(recon, logits, posterior, posterior.mean), x, config.loss)
    # Float32 sums in another order (batches of 4 here, one of 6 there): ~1e-5 relative; the
    # KL of an untrained model is a difference of near-equal terms.
    assert metrics[keys.VAL_LOSS] == pytest.approx(terms["loss"].item(), rel=1e-4)
    assert metrics[keys.VAL_KL] == pytest.approx(terms["kl"].item(), rel=1e-4)
    assert metrics[keys.VAL_MSE] == pytest.approx((recon - x).square().mean().item(), rel=1e-4)


def test_validation_is_deterministic_and_leaves_weights_mode_and_rng_alone():
    config = tiny_config(**{"model.dropout": 0.3})
    model = make_model(config, seed=0).train()
    images, labels = validation_set()
    before, rng = _snapshot(model), torch.get_rng_state()
    first = validation_pass(model, images, _per_patch(config), labels == 0)
    assert model.training and torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(t, before[n]) for n, t in model.state_dict().items())
    second = validation_pass(model, images, _per_patch(config), labels == 0)
    assert first[0] == second[0]
    np.testing.assert_array_equal(first[1]["l2_smooth/topk_mean"],
                                  second[1]["l2_smooth/topk_mean"])


def test_val_mse_is_in_unit_scale_for_tanh():
    config = tiny_config(**{"model.output_activation": "tanh", "loss.bce_weight": 0.0,
                            "loss.mse_weight": 1.0})
    model = make_model(config, seed=0)
    with torch.no_grad():  # a model that outputs -1 everywhere: black in unit scale
        model.decoder[-1].weight.zero_()
        model.decoder[-1].bias.fill_(-50.0)
    images, labels = validation_set()
    metrics, _ = validation_pass(model, images, _per_patch(config), labels == 0)
    expected = float(((images[labels == 0].astype(np.float64) / 255) ** 2).mean())
    assert metrics[keys.VAL_MSE] == pytest.approx(expected, rel=1e-5)


def test_a_bf16_trial_hands_a_pulled_model_its_exact_validation_scores(tmp_path):
    """Trials may train in bf16; scoring is fp32 everywhere, so the model that scores after
    ``vae.load`` on a CPU meets the very numbers its calibration was fit on."""
    config = tiny_config(**{"train.precision": "bf16", "train.batch_size": 4})
    model = make_model(config, seed=4)
    images, labels = validation_set(normal=8, defect=4)
    train_epoch(model, make_optimizer(model, config.train), images[labels == 0], config, CPU)
    # Even a caller inside bf16 autocast (a training loop's context) gets fp32 scores.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, scores, _, scorer = validate(model, torch.from_numpy(images), labels, config)
    model.config = replace(config, score=scorer)
    folder = vae.save(model, tmp_path / "pulled")
    rescored, _ = score_patches(vae.load(folder), images, keep_maps=False)
    np.testing.assert_array_equal(rescored, scores)


def test_scores_come_back_in_input_order_whatever_the_order_of_the_labels():
    config = tiny_config(**{"score.select": "best"})
    model = make_model(config, seed=6)
    images, labels = validation_set(normal=9, defect=7)
    order = np.random.default_rng(0).permutation(len(labels))  # normal and defect interleaved
    images, labels = images[order], labels[order]
    _, scores = validation_pass(model, images, _per_patch(config), labels == 0,
                                batch_size=4)
    expected = score_candidates(model, images, _per_patch(config),
                                batch_size=4)
    for name in expected:
        np.testing.assert_array_equal(scores[name], expected[name])


def test_bad_masks_are_refused_with_the_shape_or_reason():
    config = tiny_config()
    model = make_model(config, seed=0)
    images, labels = validation_set()
    with pytest.raises(ValueError, match=r"normal must be a bool mask of shape \(12,\)"):
        validation_pass(model, images, _per_patch(config), labels[:5] == 0)
    with pytest.raises(ValueError, match="no normal patches"):
        validation_pass(model, images, _per_patch(config), np.zeros(12, bool))


def test_the_strip_reference_in_validation_scores_as_a_pulled_model_scores_each_strip(tmp_path):
    config = tiny_config(**{"score.select": "best"})
    model = make_model(config, seed=5)
    images, labels = validation_set(normal=8, defect=8, seed=2)
    side = images.shape[-1]
    strips = np.repeat([0, 1], 8)
    corners = np.array([(side * (i % 8), 0) for i in range(16)])
    real = (torch.from_numpy(images), labels.copy())
    layouts = (StripLayout(strips, corners, labels == 0), StripLayout(strips, corners))
    metrics, _, real_scores, _ = validate(model, torch.from_numpy(images), labels, config, real,
                                          "real", layouts)
    assert metrics[keys.VAL_SCORERS_COMPARED] == len(NAMES)
    assert f"{keys.VAL_REAL_AUROC_BY_SCORER}/{STRIP_REFERENCE}" in metrics
    # A checkpoint that keeps the reference scores each strip, alone, exactly as validation did.
    model.config = replace(config, score=candidates(config.score)[STRIP_REFERENCE])
    pulled = vae.load(vae.save(model, tmp_path / "pulled"))
    assert pulled.config.score.reference == "strip_fabric"
    _, by_scorer = validation_pass(model, images, candidates(pulled.config.score), labels == 0,
                                   layout=layouts[1])
    for strip in (0, 1):
        rows = strips == strip
        np.testing.assert_allclose(strip_scores(pulled, images[rows], corners[rows],
                                                reference="strip_fabric")[0],
                                   by_scorer[STRIP_REFERENCE][rows], rtol=1e-5)
    with pytest.raises(ValueError, match=r"score.reference='strip_fabric' scores a patch against"):
        score_patches(pulled, images)
