"""Search-space override files (``aitexvae tune --space FILE``).

The file is a YAML mapping whose keys are dotted config keys (``VAEConfig.valid_keys()``); each
value is either a fixed value or one distribution::

    model.latent_dim: {choice: [16, 32, 64]}      # one of the listed values
    model.dropout: {uniform: [0.0, 0.3]}          # float, low <= x <= high
    train.learning_rate: {loguniform: [1e-4, 1e-2]}  # float, uniform in log space, low > 0
    train.batch_size: {randint: [8, 32]}          # integer, both ends included
    model.rank: {lograndint: [1, 16]}             # integer, log scale, both ends included
    loss.kl_weight: 0.5                           # fixed for every trial

A key in the file replaces that key's default distribution; every other key keeps its default.
Naming any of ``loss.mse_weight``, ``loss.bce_weight``, ``loss.fft_weight`` replaces the default
loss mix: the weights you name are used as given, those you do not name are 0. Or search whole
mixes, as the default space does: ``loss.mix`` maps a name to the weights of that mix (weights
left out are 0; a mix with BCE is drawn only with a ``sigmoid`` or ``none`` output)::

    loss.mix: {mse: {mse_weight: 1.0}, mse+fft: {mse_weight: 1.0, fft_weight: 0.02}}

Keys set by command-line flags (image size, epochs, seed, channels) are rejected here, naming
the flag. ``dump_space`` writes a space in this form (the parent run's ``search_space.yaml``);
reading that file back gives the same space.
"""

from __future__ import annotations

import difflib
import math
import re
from pathlib import Path
from typing import Any

import yaml

from search.space import (
    LOSS_WEIGHT_KEYS,
    Choice,
    Distribution,
    Fixed,
    LossMix,
    RandInt,
    SearchSpace,
    SpaceError,
    Uniform,
)
from vae.config import VAEConfig

FLAG_KEYS = {"model.image_size": "--image-size", "model.in_channels": "the data (its channels)",
             "model.input_resize": "--resize",
             "train.num_epochs": "--max-epochs", "train.seed": "--seed"}
MAX_FILE_BYTES, MAX_DEPTH, MAX_EVENTS = 64 << 10, 8, 20_000  # see _check_shape
DISTRIBUTIONS = ("choice", "uniform", "loguniform", "randint", "lograndint")
# YAML 1.1 (PyYAML) reads "1e-4" as a string: numbers written that way are accepted as numbers.
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _number(value: Any) -> Any:
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        number = float(value)
        return int(number) if number.is_integer() and re.fullmatch(r"[+-]?\d+", value.strip()) \
            else number
    return value


def parse_distribution(key: str, raw: Any) -> Distribution:
    """One value of the file → a distribution; errors name the key and what is allowed."""
    if isinstance(raw, dict):
        if len(raw) != 1 or next(iter(raw)) not in DISTRIBUTIONS:
            raise SpaceError(f"search space key {key!r}: {raw!r} is not a distribution; write "
                             f"one of {list(DISTRIBUTIONS)} as {{name: [...]}}, or a fixed value")
        name, args = next(iter(raw.items()))
        if not isinstance(args, list):
            raise SpaceError(f"search space key {key!r}: {name} needs a list, got {args!r}")
        args = [_number(a) for a in args]
        if name == "choice":
            return _choice(key, args)
        return _range(key, name, args)
    if isinstance(raw, list):
        raise SpaceError(f"search space key {key!r}: a bare list {raw!r} is ambiguous; write "
                         f"{{choice: {raw!r}}} to search over it")
    if raw is None or not isinstance(raw, str | int | float | bool):
        raise SpaceError(f"search space key {key!r}: fixed value {raw!r} is not a number, "
                         "string or boolean")
    return Fixed(_number(raw))


def _choice(key: str, values: list[Any]) -> Distribution:
    if not values:
        raise SpaceError(f"search space key {key!r}: empty choice; list at least one value")
    for value in values:
        if value is None or not isinstance(value, str | int | float | bool):
            raise SpaceError(f"search space key {key!r}: choice value {value!r} is not a "
                             "number, string or boolean")
    if len(set(values)) != len(values):
        raise SpaceError(f"search space key {key!r}: choice {values!r} lists a value twice")
    return Choice(tuple(values)) if len(values) > 1 else Fixed(values[0])


def _range(key: str, name: str, args: list[Any]) -> Distribution:
    integer = name.endswith("randint")
    kind = "integers" if integer else "numbers"
    if len(args) != 2 or not all(isinstance(a, int | float) and not isinstance(a, bool)
                                 and math.isfinite(a) for a in args):
        raise SpaceError(f"search space key {key!r}: {name} needs [low, high] ({kind}), "
                         f"got {args!r}")
    low, high = args
    log = name.startswith("log")
    if integer and not all(float(a).is_integer() for a in args):
        raise SpaceError(f"search space key {key!r}: {name} needs integer bounds, got {args!r}")
    if low > high or (low == high and not integer):
        raise SpaceError(f"search space key {key!r}: {name} needs low < high, got {args!r}")
    if log and low <= 0:
        raise SpaceError(f"search space key {key!r}: {name} needs low > 0, got {args!r}")
    if integer:
        return RandInt(int(low), int(high), log=log)
    return Uniform(float(low), float(high), log=log)


MIX_KEY = "loss.mix"
_MIX_WEIGHTS = {key.split(".", 1)[1]: key for key in LOSS_WEIGHT_KEYS}  # mse_weight -> loss.…


def parse_loss_mixes(raw: Any, source: str) -> tuple[LossMix, ...]:
    """``loss.mix: {name: {mse_weight: w, ...}, ...}`` → the mixes, checked."""
    where = f"{source}: {MIX_KEY}"
    if not isinstance(raw, dict) or not raw:
        raise SpaceError(f"{where} must map each mix's name to its weights, e.g. "
                         "{mse: {mse_weight: 1.0}}; got " + repr(raw)[:80])
    mixes = []
    for name, weights in raw.items():
        if not isinstance(weights, dict) or not weights:
            raise SpaceError(f"{where} {name!r}: expected weights as {{mse_weight: 1.0, ...}}, "
                             f"got {weights!r}"[:200])
        values = {}
        for key, value in weights.items():
            value = _number(value)
            if key not in _MIX_WEIGHTS:
                raise SpaceError(f"{where} {name!r}: unknown weight {key!r}; allowed: "
                                 f"{list(_MIX_WEIGHTS)}")
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not math.isfinite(value) or value < 0:
                raise SpaceError(f"{where} {name!r}: {key} must be a number >= 0, got {value!r}")
            values[key] = float(value)
        if not any(values.values()):
            raise SpaceError(f"{where} {name!r}: every weight is 0; a mix needs one term")
        mixes.append(LossMix(str(name), **{k: values.get(k, 0.0) for k in _MIX_WEIGHTS}))
    return tuple(mixes)


def parse_space(data: Any, source: str = "search space"
                ) -> tuple[dict[str, Distribution], tuple[LossMix, ...] | None]:
    """A loaded YAML mapping → ``({config key: distribution}, loss mixes or None)``; unknown
    keys fail, named."""
    if data is None:
        return {}, None
    if not isinstance(data, dict):
        raise SpaceError(f"{source}: expected a mapping of config keys to values, "
                         f"got {type(data).__name__}")
    valid = VAEConfig.valid_keys()
    overrides: dict[str, Distribution] = {}
    mixes = None
    for key, raw in data.items():
        if key == MIX_KEY:
            mixes = parse_loss_mixes(raw, source)
            continue
        if key in FLAG_KEYS:
            raise SpaceError(f"{source}: key {key!r} is set by {FLAG_KEYS[key]}, not by the "
                             "search space")
        if key not in valid:
            hint = difflib.get_close_matches(str(key), valid, n=1)
            near = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise SpaceError(f"{source}: unknown config key {key!r}{near}; valid keys: "
                             f"{[k for k in valid if k not in FLAG_KEYS]}")
        overrides[key] = parse_distribution(key, raw)
    return overrides, mixes


def _document(dist: Distribution) -> Any:
    """One distribution in the file form ``parse_distribution`` reads."""
    if isinstance(dist, Fixed):
        return dist.value
    if isinstance(dist, Choice):
        return {"choice": list(dist.values)}
    name = ("log" if dist.log else "") + ("randint" if isinstance(dist, RandInt) else "uniform")
    return {name: [dist.low, dist.high]}


def dump_space(space: SearchSpace, header: str = "") -> str:
    """The space as a ``--space`` file: every key's distribution, and the loss mix."""
    # One line per key, as a person writes the file; the loss mix one line per mix.
    lines = [yaml.safe_dump({key: _document(dist)}, default_flow_style=True,
                            width=10_000).strip()[1:-1] for key, dist in space.params.items()]
    if space.loss_mixes:
        mixes = {mix.name: {short: weight for short, key in _MIX_WEIGHTS.items()
                            if (weight := mix.weights()[key])} for mix in space.loss_mixes}
        lines.append(yaml.safe_dump({MIX_KEY: mixes}, default_flow_style=None,
                                    sort_keys=False, width=10_000).rstrip())
    comments = [f"# {line}".rstrip() for line in header.splitlines()]
    return "\n".join(comments + lines) + "\n"


def _check_shape(text: str, source: str) -> None:
    """Refuse what no space file needs and a hostile one uses: aliases (``*a``: nested anchors
    turn a few hundred bytes into gigabytes once expanded), deep nesting (PyYAML recurses per
    level) and huge files. Walks YAML's event stream, which is flat: nothing here recurses."""
    depth = 0
    for events, event in enumerate(yaml.parse(text, Loader=yaml.SafeLoader), start=1):
        if isinstance(event, yaml.AliasEvent):
            raise SpaceError(f"{source}: YAML aliases (*{event.anchor}) are not allowed in a "
                             "search space file; write each value out")
        if isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise SpaceError(f"{source} nests deeper than {MAX_DEPTH} levels; a space file "
                                 "is `key: value` or `key: {distribution: [...]}`")
        elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            depth -= 1
        if events > MAX_EVENTS:
            raise SpaceError(f"{source} has more than {MAX_EVENTS} YAML nodes; a space file "
                             "names at most a few dozen keys")


def load_space_file(path: str | Path, base: SearchSpace | None = None) -> SearchSpace:
    """The default space (or ``base``) with the file's keys overriding it."""
    path = Path(path)
    source = f"search space file {str(path)!r}"
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise SpaceError(f"{source} is {path.stat().st_size} bytes; a space file is at most "
                             f"{MAX_FILE_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise SpaceError(f"cannot read {source}: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise SpaceError(f"{source} is not UTF-8 text ({error.reason} at byte "
                         f"{error.start})") from None
    try:
        _check_shape(text, source)
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise SpaceError(f"{source} is not valid YAML: {error}") from None
    overrides, mixes = parse_space(data, source)
    return (base or SearchSpace()).with_overrides(overrides, mixes)
