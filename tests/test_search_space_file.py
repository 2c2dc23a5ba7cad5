"""`--space FILE`: the YAML format, and files that must fail before Ray starts, naming the problem."""

from __future__ import annotations

import textwrap

import pytest
import ray

from search import cli
from search.space import (
    Choice,
    Fixed,
    LossMix,
    RandInt,
    SearchSpace,
    SpaceError,
    Uniform,
    fit_to_image_size,
)
from search.space_check import check_space
from search.space_file import dump_space, load_space_file, parse_space

BASE = {"model.image_size": 64, "train.num_epochs": 2}


def _write(tmp_path, text: str):
    path = tmp_path / "space.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_the_documented_example_parses_into_the_distributions_it_names(tmp_path):
    path = _write(tmp_path, """\
        model.latent_dim: {choice: [16, 32, 64]}
        model.dropout: {uniform: [0.0, 0.3]}
        train.learning_rate: {loguniform: [1e-4, 1e-2]}
        train.batch_size: {randint: [8, 32]}
        model.rank: {lograndint: [1, 8]}
        loss.kl_weight: 0.5
        """)
    space = load_space_file(path)
    assert space.params["model.latent_dim"] == Choice((16, 32, 64))
    assert space.params["model.dropout"] == Uniform(0.0, 0.3)
    # PyYAML reads "1e-4" as a string; the file format accepts it as the number it means.
    assert space.params["train.learning_rate"] == Uniform(1e-4, 1e-2, log=True)
    assert space.params["train.batch_size"] == RandInt(8, 32)
    assert space.params["model.rank"] == RandInt(1, 8, log=True)
    assert space.params["loss.kl_weight"] == Fixed(0.5)
    assert space.params["model.output_activation"] == Choice(("sigmoid", "tanh", "relu", "none"))
    assert check_space(space, BASE) > 0


@pytest.mark.parametrize("data, message", [
    ({"model.latentdim": 8}, "unknown config key 'model.latentdim' (did you mean "
                             "'model.latent_dim'?)"),
    ({"model.latent_dim": {"choice": []}}, "'model.latent_dim': empty choice"),
    ({"model.latent_dim": [8, 16]}, "bare list"),
    ({"model.dropout": {"normal": [0, 1]}}, "is not a distribution"),
    ({"train.learning_rate": {"loguniform": [0, 1]}}, "needs low > 0"),
    ({"model.dropout": {"uniform": [0.5, 0.1]}}, "needs low < high"),
    ({"model.image_size": 128}, "set by --image-size"),
    ({"train.num_epochs": 3}, "set by --max-epochs"),
    ({"loss.mix": [1, 2]}, "loss.mix must map each mix's name to its weights"),
    ({"loss.mix": {"a": {"l1_weight": 1}}}, "'a': unknown weight 'l1_weight'"),
    ({"loss.mix": {"a": {"mse_weight": -1}}}, "'a': mse_weight must be a number >= 0"),
    ({"loss.mix": {"a": {"mse_weight": "x"}}}, "'a': mse_weight must be a number >= 0"),
    ({"loss.mix": {"a": {"mse_weight": 0}}}, "'a': every weight is 0"),
])
def test_malformed_entries_are_rejected_naming_the_key(data, message):
    with pytest.raises(SpaceError) as error:
        parse_space(data)
    assert message in str(error.value)


@pytest.mark.parametrize("text, message", [
    ("model.latent_dims: {choice: [8, 16]}\n", "unknown config key 'model.latent_dims'"),
    ("model.latent_dim: {choice: []}\n", "'model.latent_dim': empty choice"),
    ("loss.bce_weight: 1.0\nmodel.output_activation: {choice: [sigmoid, tanh]}\n",
     "invalid combination"),
])
def test_a_bad_space_file_fails_before_ray_starts_with_exit_code_2(tmp_path, capsys, text,
                                                                   message):
    assert not ray.is_initialized()
    path = _write(tmp_path, text)
    code = cli.main(["tune", "--space", str(path), "--storage-path", str(tmp_path / "ray"),
                     "--no-tracking"])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.startswith("aitexvae tune: error:")
    assert "Traceback" not in err
    assert not ray.is_initialized()  # nothing was started
    assert not (tmp_path / "ray").exists()  # nothing was written


def test_invalid_combination_message_names_the_values(tmp_path):
    path = _write(tmp_path, "loss.bce_weight: 1.0\nmodel.output_activation: {choice: [relu]}\n")
    with pytest.raises(SpaceError) as error:
        check_space(load_space_file(path), BASE)
    assert "model.output_activation='relu'" in str(error.value)
    assert "loss.bce_weight=1.0" in str(error.value)


# Nine levels of nine aliases: 9^9 ≈ 387 M values once expanded (gigabytes), in ~400 bytes.
BOMB = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 8)) + \
    f"model.latent_dim: {{choice: [{', '.join(['*a7'] * 9)}]}}\n"


@pytest.mark.parametrize(("content", "message"), [
    (BOMB.encode(), r"YAML aliases \(\*a0\) are not allowed"),
    (("model.latent_dim: " + "[" * 5000 + "]" * 5000 + "\n").encode(),
     "nests deeper than 8 levels"),
    (b"model.latent_dim: \xff\xfe\n", r"is not UTF-8 text \(invalid start byte at byte 18\)"),
    (b"model.latent_dim: 8\n" + b"#" * (70 << 10), r"is 71700 bytes; a space file is at most"),
    (("model.latent_dim: {choice: [" + "1," * 25_000 + "1]}\n").encode(),
     "more than 20000 YAML nodes"),
])
def test_hostile_space_files_are_refused_cheaply_in_one_message(tmp_path, content, message):
    from tests.support.peak_memory import peak_mib

    path = tmp_path / "space.yaml"
    path.write_bytes(content)
    with pytest.raises(SpaceError, match=message):
        load_space_file(path)
    # The same in a fresh process, whose peak memory is this load's alone (not the suite's).
    code = ("import sys\nfrom search.space_file import load_space_file\n"
            "from search.space import SpaceError\ntry:\n    load_space_file(sys.argv[1])\n"
            "except SpaceError:\n    pass")
    assert peak_mib(code, str(path)) < 1024  # MiB (importing torch is ~450 of it)


def test_the_resize_stored_with_the_model_is_a_flag_not_a_space_key(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("model.input_resize: 64\n")
    with pytest.raises(SpaceError, match=r"model.input_resize.*--resize"):
        load_space_file(path)


@pytest.mark.parametrize("select", ["best", "best_per_patch"])
def test_a_scorer_key_searched_while_the_trials_pick_their_scorer_is_refused(tmp_path, select):
    path = tmp_path / "space.yaml"
    path.write_text(f"score.select: {select}\nscore.reference:\n  choice: [none, strip]\n")
    with pytest.raises(SpaceError, match=r"\['score.reference'\] are searched while score.select "
                                         r"can be 'best' or 'best_per_patch'.*score.select: fixed"):
        check_space(load_space_file(path))
    path.write_text("score.select: fixed\nscore.reference:\n  choice: [none, strip]\n")
    assert check_space(load_space_file(path)) >= 2


def _draws(space, count: int = 40) -> list[dict]:
    import optuna

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    draws = []
    for _ in range(count):
        trial = study.ask()
        draws.append(space.define(trial))
        study.tell(trial, 0.0)
    return draws


@pytest.mark.parametrize("image_size", [32, 48, 64])
def test_a_dumped_space_reads_back_as_the_space_it_was(tmp_path, image_size):
    space = fit_to_image_size(SearchSpace(), image_size)  # the built-in space, as launched
    path = tmp_path / "search_space.yaml"
    path.write_text(dump_space(space, "a header\nof two lines"))
    assert path.read_text().startswith("# a header\n# of two lines\nmodel.latent_dim: {choice:")
    back = load_space_file(path)
    assert dict(back.params) == dict(space.params)
    assert back.loss_mixes == space.loss_mixes and len(back.loss_mixes) == 5
    assert back.describe() == space.describe()  # rank still capped: it is the built-in one
    assert _draws(back) == _draws(space)  # the same trials under the same seeded sampler
    assert check_space(back, {**BASE, "model.image_size": image_size}) > 0


def test_a_loss_mix_in_a_space_file_is_searched_as_whole_mixes(tmp_path):
    path = _write(tmp_path, """\
        model.output_activation: {choice: [sigmoid, tanh]}
        loss.mix: {plain: {mse_weight: 1}, spectral: {mse_weight: 1, fft_weight: 0.5},
                   bce: {bce_weight: 2}}
        """)
    space = load_space_file(path)
    assert space.loss_mixes == (LossMix("plain", 1.0, 0.0, 0.0),
                                LossMix("spectral", 1.0, 0.0, 0.5), LossMix("bce", 0.0, 2.0, 0.0))
    for draw in _draws(space):  # BCE only where the output allows it
        assert draw["loss.bce_weight"] == 0 or draw["model.output_activation"] == "sigmoid"
    assert {d["loss.fft_weight"] for d in _draws(space)} == {0.0, 0.5}
    both = _write(tmp_path, "loss.mix: {a: {mse_weight: 1}}\nloss.mse_weight: 1\n")
    with pytest.raises(SpaceError, match="both a loss mix and loss weights"):
        load_space_file(both)
