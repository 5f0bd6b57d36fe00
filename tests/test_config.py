from pathlib import Path

import pytest

from cvae.config import ConfigError, Params, load_params, parse

REPO = Path(__file__).resolve().parents[1]


def test_repo_params_load_and_match_their_sections():
    params = load_params(REPO / "params.yaml")
    assert isinstance(params, Params)
    assert params.train.kl.type in ("Monotonic", "Cyclical", "None")


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"unknown key train\.kl\.shape"):
        parse(Params, {"train": {"kl": {"shape": 1}}})


def test_unknown_section_is_named():
    with pytest.raises(ConfigError, match="unknown key optimiser"):
        parse(Params, {"optimiser": {}})


def test_bad_choice_lists_the_choices():
    with pytest.raises(ConfigError, match=r"train\.kl\.type: 'Sideways' is not one of "
                                          r"Monotonic, Cyclical, None"):
        parse(Params, {"train": {"kl": {"type": "Sideways"}}})


@pytest.mark.parametrize("raw, key", [
    ({"train": {"batch_size": "16"}}, r"train\.batch_size: expected int"),
    ({"train": {"batch_size": 0}}, r"train\.batch_size: must be > 0"),
    ({"model": {"last_frame_skip": "yes"}}, r"model\.last_frame_skip: expected bool"),
    ({"train": {"tfr": {"start": 1.5}}}, r"train\.tfr\.start: must be in \[0, 1\]"),
    ({"train": {"kl": {"ratio": 0}}}, r"train\.kl\.ratio"),
    ({"eval": {"n_future": 40}}, r"eval\.n_future: n_past \+ n_future must fit"),
    ({"report": {"sequence": 9}}, r"report\.sequence: must be < eval\.keep"),
    ({"model": {"levels": 6}}, r"model\.levels: must be 1 \(plain SVG\) to 5"),
    ({"model": {"level_channels": 0}}, r"model\.level_channels: must be > 0"),
    ({"train": {"precision": "fp16"}}, r"train\.precision: 'fp16' is not one of"),
])
def test_bad_values_name_their_key(raw, key):
    with pytest.raises(ConfigError, match=key):
        parse(Params, raw)


def test_ints_are_accepted_for_floats():
    assert parse(Params, {"train": {"lr": 1}}).train.lr == 1.0


def test_params_are_frozen():
    with pytest.raises(Exception):
        Params().train.lr = 3
