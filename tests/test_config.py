import json
from functools import reduce
from pathlib import Path

import pytest
from dvc.utils.serialize import parse_yaml

from cvae.config import ConfigError, Params, load_params, parse, read_yaml
from cvae.presets import merge, merged_tree

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
    ({"model": {"skips_from": "svg_code"}, "eval": {"n_past": 1}},
     r"eval\.n_past: must be >= 2 with model\.skips_from: svg_code"),
    ({"train": {"first_gap": -1}}, r"train\.first_gap: must be >= 0"),
    ({"train": {"moving_weight": -1}}, r"train\.moving_weight: must be >= 0"),
    ({"train": {"first_gap": 2}}, r"train\.first_gap: must be 0 on the robot track"),
    ({"data": {"source": "sim-dance", "dance": {"train_vi_len": 16}},
      "train": {"n_past": 1, "n_future": 7, "first_gap": 9}},
     r"train\.n_future: n_past \+ n_future \+ first_gap must fit in data\.dance\.train_vi_len \(16\)"),
])
def test_bad_values_name_their_key(raw, key):
    with pytest.raises(ConfigError, match=key):
        parse(Params, raw)


def test_ints_are_accepted_for_floats():
    assert parse(Params, {"train": {"lr": 1}}).train.lr == 1.0


def test_params_are_frozen():
    with pytest.raises(Exception):
        Params().train.lr = 3


def test_the_shipped_params_are_the_defaults():
    """One source of defaults: a key or section left out means what the shipped file says."""
    assert load_params(REPO / "params.yaml") == Params()


@pytest.mark.parametrize("text", ["train:\n  epochs: 20\n", "model: {}\n"])
def test_a_partial_file_means_the_shipped_settings(tmp_path, text):
    (tmp_path / "params.yaml").write_text(text)
    assert load_params(tmp_path / "params.yaml") == load_params(REPO / "params.yaml")


@pytest.mark.parametrize("text", ["", "\n", "# all settings removed\n"])
def test_an_empty_file_is_refused_not_read_as_the_defaults(tmp_path, text):
    """An emptied params.yaml (cut short, or overwritten) would otherwise start a full-size run
    with the defaults without a word."""
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(ConfigError, match=r"the file is empty: restore it \(git checkout "
                                          r"params.yaml\)"):
        load_params(tmp_path / "params.yaml")


@pytest.mark.parametrize("written, value", [("1e-3", 0.001), ("2E-4", 0.0002), ("1.5e-3", 0.0015),
                                            ("0.002", 0.002), ("3", 3.0)])
def test_numbers_are_read_as_dvc_reads_them(tmp_path, written, value):
    text = f"train:\n  lr: {written}\n"
    (tmp_path / "params.yaml").write_text(text)
    assert load_params(tmp_path / "params.yaml").train.lr == value
    assert parse_yaml(text, "params.yaml")["train"]["lr"] == value  # what dvc exp/params see


@pytest.mark.parametrize("text, message", [
    ("data:\n  num_trian: 3\n", "unknown key data.num_trian"),
    ("trian:\n  epochs: 3\n", "unknown key trian"),
    ("train:\n  lr: [0.1]\n", r"train\.lr: expected float"),
    ("train: 3\n", "train: expected a mapping"),
    ("train:\n  lr: 0.1\n lr: 2\n", "is not valid YAML"),
    ("- a\n- b\n", "params: expected a mapping"),
    ("model:\n  last_frame_skip: yes\n", r"model\.last_frame_skip: expected bool, got 'yes'"),
])
def test_bad_params_files_are_named(tmp_path, text, message):
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_params(tmp_path / "params.yaml")


@pytest.mark.parametrize("preset", sorted(p.stem for p in (REPO / "presets").glob("*.yaml")))
def test_every_preset_loads_over_the_shipped_params(preset):
    assert isinstance(parse(Params, preset_tree(preset)), Params)


def preset_tree(preset: str, changes: dict | None = None) -> dict:
    """params.yaml with presets/<preset>.yaml and then `changes` merged over it."""
    return merge(merged_tree(preset, REPO / "params.yaml"), changes or {})


RUNS = sorted(p.parent.relative_to(REPO / "experiments").as_posix()
              for p in (REPO / "experiments").rglob("params.yaml"))


# Options removed since some runs were made, with the value the code kept: a run's params that
# hold one at that value are today's settings; at another, the run cannot be made again.
RETIRED = {"model.dance.sees_first_label": False, "model.dance.sees_previous": True,
           "model.dance.prior": "fixed"}


def _retire(tree: dict) -> tuple[dict, dict]:
    """`tree` without the RETIRED options, and the values it had for them."""
    tree, had = json.loads(json.dumps(tree)), {}
    for key in RETIRED:
        *sections, name = key.split(".")
        section = reduce(lambda node, part: node.get(part, {}), sections, tree)
        if name in section:
            had[key] = section.pop(name)
    return tree, had


@pytest.mark.parametrize("run", RUNS)
def test_every_committed_run_is_its_recipe_over_params_yaml(run):
    """experiments/<study>/<run>/: the committed params.yaml of the run is its recipe.yaml
    merged over today's params.yaml, so `dvc exp run $(python -m pipeline.preset <recipe>)`
    runs it again. A study is finished history: presets move on without touching it. A run
    that used an option since removed says so in its recipe."""
    folder = REPO / "experiments" / run
    recipe, _ = _retire(merge(read_yaml(REPO / "params.yaml"), read_yaml(folder / "recipe.yaml")))
    committed, had = _retire(read_yaml(folder / "params.yaml"))
    assert parse(Params, recipe) == parse(Params, committed)
    removed = [f"{key}: {json.dumps(value)}" for key, value in had.items() if value != RETIRED[key]]
    if removed:
        header = (folder / "recipe.yaml").read_text().split("\n", 3)[1]
        assert f"It ran {removed[0]}, an option removed since" in header


def test_there_are_committed_runs_to_check():
    assert len(RUNS) >= 40
