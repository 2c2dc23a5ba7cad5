"""The searcher's saved state is JSON that replays to the same study (issue 11 item 6).

Tune saves a searcher through ``save`` and hands the file back on ``--resume``; a pickle there
would run whatever anyone who can write the storage path put in it. ``SpaceSearcher`` saves its
asks and tells as JSON and replays them against the same seeded sampler, so a resumed search
suggests exactly what the uninterrupted one would have.
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from search.searcher import SpaceSearcher, parse_state
from search.space import SearchSpace
from tests.support.hostile import CreatesFileWhenUnpickled

METRIC = "val/objective"


def _searcher(search_alg: str) -> SpaceSearcher:
    return SpaceSearcher(SearchSpace(), search_alg=search_alg, seed=5, num_samples=20,
                         metric=METRIC, mode="max")


def _value(config: dict) -> float:  # a made-up objective, so that TPE models something
    return 1.0 - abs(np.log10(config["train.learning_rate"]) + 3.0)


def _step(searcher: SpaceSearcher, i: int, drawn: dict[str, dict]) -> None:
    """Ask trial i; finish the trial asked two steps before (two stay pending, as in a search)."""
    drawn[f"t{i}"] = searcher.suggest(f"t{i}")
    searcher.on_trial_result(f"t{i}", {METRIC: 0.1 * (i % 3)})
    done = f"t{i - 2}"
    if done in drawn:
        if i % 5 == 0:
            searcher.on_trial_complete(done, error=True)
        else:
            searcher.on_trial_complete(done, {METRIC: _value(drawn[done])})


@pytest.mark.parametrize("search_alg", ["random", "optuna"])
def test_a_restored_searcher_suggests_what_the_uninterrupted_one_does(search_alg, tmp_path):
    original, drawn = _searcher(search_alg), {}
    for i in range(12):  # past TPE's random warm-up
        _step(original, i, drawn)
    path = tmp_path / "searcher-state-x.pkl"
    original.save(str(path))
    state = json.loads(path.read_text())  # plain JSON, no pickle
    assert state["sampler"] == {"search_alg": search_alg, "seed": 5, "num_samples": 20}
    assert sum(e[0] == "ask" for e in state["events"]) == 12
    assert set(state["best"]) == {"t10", "t11"}  # the two pending trials' best so far

    restored = _searcher("random" if search_alg == "optuna" else "optuna")  # saved args win
    restored.restore(str(path))
    assert [t.state for t in restored._study.trials] == [t.state for t in original._study.trials]
    assert [t.params for t in restored._study.trials] == [t.params for t in original._study.trials]
    continued, resumed = dict(drawn), dict(drawn)
    for i in range(12, 20):
        _step(original, i, continued)
        _step(restored, i, resumed)
    assert resumed == continued
    assert len({json.dumps(c, sort_keys=True) for c in resumed.values()}) == 20  # really drawn




def test_a_pickled_or_damaged_state_is_refused_unread(tmp_path):
    marker = tmp_path / "pwned"
    pickled = tmp_path / "searcher-state-old.pkl"
    pickled.write_bytes(pickle.dumps(CreatesFileWhenUnpickled(str(marker))))
    with pytest.raises(ValueError, match="is not the JSON this version of aitexvae writes") as e:
        _searcher("random").restore(str(pickled))
    assert "a pickle from an older version is never loaded" in str(e.value)
    assert not marker.exists()
    good = {"format": 1, "sampler": {"search_alg": "random", "seed": 0, "num_samples": 2},
            "metric": METRIC, "mode": "max", "events": [["ask", "a"], ["tell", "a", 0.5]],
            "best": {}}
    assert parse_state(json.dumps(good).encode(), "p") == good
    for events in ([["tell", "a", 0.5]],                       # told before asked
                   [["ask", "a"], ["ask", "a"]],               # asked twice
                   [["ask", "a"], ["tell", "a", "NaN"]],       # a value that is not a number
                   [["ask", "a"], ["run", "a"]]):
        with pytest.raises(ValueError, match="is damaged"):
            parse_state(json.dumps({**good, "events": events}).encode(), "p")
    with pytest.raises(ValueError, match="is damaged"):
        parse_state(json.dumps({**good, "sampler": {"search_alg": "random"}}).encode(), "p")
