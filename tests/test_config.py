import json
import re
import shlex
import statistics
from functools import reduce
from pathlib import Path

import pytest
from dvc.utils.serialize import parse_yaml

from cvae.config import ConfigError, Params, load_params, parse
from pipeline.preset import merge, merged_tree

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


def committed_psnr(runs: str) -> list[float]:
    """Test PSNR of each committed run matching `runs` (a glob under results/), in name order."""
    return [json.loads(p.read_text())["psnr"]
            for p in sorted((REPO / "results").glob(f"{runs}/eval.json"))]


def committed_params(run: str) -> Params:
    from cvae.config import read_yaml
    return parse(Params, read_yaml(REPO / "results" / run / "params.yaml"))


# presets/dance.yaml before the background plate: the first frame itself under the composite,
# every pixel weighted alike. The runs below ran presets of before; each is this plus its changes.
BEFORE_PLATE = {"model": {"dance": {"plate": False}}, "train": {"moving_weight": 0}}


def before_plate(changes: dict) -> dict:
    return merge(BEFORE_PLATE, changes)


# presets/dance.yaml before `train.first_gap` (commit c2c0476): 16-frame clips, 15 predicted
# frames, batches of 8, 12 epochs of 40 steps at a constant lr, teacher forcing -0.1 an epoch.
SEVEN_MINUTE_DANCE = before_plate({"data": {"dance": {"train_vi_len": 16}},
                                   "model": {"dance": {"first_lookup_dim": 0}},
                                   "train": {"lr_schedule": "constant", "n_future": 15,
                                             "first_gap": 0, "batch_size": 8, "epochs": 12,
                                             "steps_per_epoch": 40, "kl": {"type": "Monotonic"},
                                             "tfr": {"decay_step": 0.1}}})


# presets/dance.yaml before it trained 25 epochs at a constant beta: 30 epochs, beta ramped
THIRTY_EPOCHS = before_plate({"train": {"epochs": 30, "kl": {"type": "Monotonic"}}})
# and before the label-guided look-up
NO_LOOKUP = merge(THIRTY_EPOCHS, {"model": {"dance": {"first_lookup_dim": 0}}})
MOVING_WEIGHTS = sorted(int(p.name.rsplit("-", 1)[1]) for p in
                        (REPO / "results/dance-preset-ablations").glob("moving-weight-*"))
PRESET_SEEDS = sorted(int(p.name[4:]) for p in (REPO / "results/dance-preset").glob("seed*"))


@pytest.mark.parametrize("seed", PRESET_SEEDS)
def test_the_committed_dance_results_ran_the_dance_preset(seed):
    """results/dance-preset/ backs the README's dance numbers: its params are the preset's;
    results/dance-preset-before-plate/, -30-epochs/ and -no-lookup/ the same seeds with the
    preset as it was before; results/dance-preset-moving-weight-3/ the one before the plate
    with the moving region weighted."""
    seeded = {"train": {"seed": seed}}
    assert committed_params(f"dance-preset/seed{seed}") == \
        parse(Params, preset_tree("dance", seeded))
    variants = {"dance-preset-before-plate": BEFORE_PLATE, "dance-preset-30-epochs": THIRTY_EPOCHS,
                "dance-preset-no-lookup": NO_LOOKUP,
                "dance-preset-moving-weight-3": before_plate({"train": {"moving_weight": 3}})}
    for run, changes in variants.items():
        assert committed_params(f"{run}/seed{seed}") == \
            parse(Params, preset_tree("dance", merge(changes, seeded)))


def test_the_preset_runs_on_another_cpu_ran_the_preset():
    """results/dance-preset-avx512-cpu/: the preset again, seeds 1 and up, on another CPU."""
    runs = sorted((REPO / "results/dance-preset-avx512-cpu").glob("seed*"))
    assert len(runs) >= 3
    for run in runs:
        seeded = {"train": {"seed": int(run.name[4:])}}
        assert committed_params(f"dance-preset-avx512-cpu/{run.name}") == \
            parse(Params, preset_tree("dance", seeded))


def test_the_committed_runs_of_earlier_dance_presets_are_todays_with_their_changes():
    """The README's earlier CPU rows: the 7-minute preset, its 30-epoch cosine variant, the
    30-epoch preset without the first frame's gap, and the ablations of the preset before the
    plate."""
    assert committed_params("dance-preset-7min") == \
        parse(Params, preset_tree("dance", SEVEN_MINUTE_DANCE))
    cosine = merge(SEVEN_MINUTE_DANCE, {"train": {"lr_schedule": "cosine", "epochs": 30,
                                                  "tfr": {"decay_step": 0.05}}})
    assert committed_params("dance-cosine30") == parse(Params, preset_tree("dance", cosine))
    b32 = merge(NO_LOOKUP, {"data": {"dance": {"train_vi_len": 16}},
                            "train": {"n_future": 15, "first_gap": 0, "steps_per_epoch": 30}})
    assert committed_params("dance-cpu-b32-cos30") == parse(Params, preset_tree("dance", b32))
    assert committed_params("dance-preset-ablations/no-first-gap") == \
        parse(Params, preset_tree("dance", merge(NO_LOOKUP, {"train": {"first_gap": 0}})))
    # Run with LOOKUP_POOL = 1 (before the keys were pooled), 30 epochs
    assert committed_params("dance-preset-ablations/unpooled-lookup") == \
        parse(Params, preset_tree("dance", THIRTY_EPOCHS))
    # Seed 1 each: the preset before the plate with one change
    ablations = {"monotonic-kl": {"train": {"kl": {"type": "Monotonic"}}},  # the ramp of before
                 "no-previous-frame": {"model": {"dance": {"sees_previous": False}}},
                 "first-label": {"model": {"dance": {"sees_first_label": True}}},
                 "plate": {"model": {"dance": {"plate": True}}},  # today's, without the weight
                 **{f"moving-weight-{weight}": {"train": {"moving_weight": weight}}
                    for weight in MOVING_WEIGHTS}}
    for run, changes in ablations.items():
        assert committed_params(f"dance-preset-ablations/{run}") == \
            parse(Params, preset_tree("dance", before_plate(changes))), run


def readme_dance_run(marker: str) -> Params:
    """What the README's `dvc exp run ... $(python -m pipeline.preset dance) -S ...` command
    that contains `marker` runs: the preset with the command's overrides (a sweep's first value),
    each value read as YAML 1.2 reads it (1e-6 a float), as DVC does."""
    commands = [" ".join(c.replace("\\\n", " ").split()) for c in re.findall(
        r"^dvc exp run .*?\$\(python -m pipeline.preset dance\)(?:.*\\\n)*.*$",
        (REPO / "README.md").read_text(), re.M)]
    [command] = [c for c in commands if marker in c]
    words = shlex.split(command)
    changes = {}
    for flag, setting in zip(words, words[1:]):
        if flag == "-S":
            key, value = setting.split("=", 1)
            value = parse_yaml(f"v: {value.split(',')[0]}", "-S")["v"]
            changes = merge(changes, reduce(lambda tree, name: {name: tree},
                                            reversed(key.split(".")), value))
    return parse(Params, preset_tree("dance", changes))


def test_the_readmes_dance_commands_run_the_settings_of_their_results():
    """The commands beside the README's numbers run what was measured (the preset has moved on
    since most of them ran, so each names what it differs in)."""
    assert readme_dance_run("-n dance-before-plate") == \
        committed_params("dance-preset-before-plate/seed1")  # seed 1: params.yaml's
    assert readme_dance_run("train.kl.type=Monotonic -S model.dance.plate=false") == \
        committed_params("dance-cpu-b32-cos30")
    annealing = merge(SEVEN_MINUTE_DANCE, {"train": {"kl": {"beta_max": 1e-6}}})
    assert readme_dance_run("train.kl.beta_max=1e-6") == \
        parse(Params, preset_tree("dance", annealing))


@pytest.mark.parametrize("runs", ["dance-preset", "dance-preset-avx512-cpu",
                                  "dance-preset-before-plate", "dance-preset-30-epochs",
                                  "dance-preset-no-lookup", "dance-preset-moving-weight-3"])
def test_the_readme_states_the_cpu_preset_mean_of_the_committed_runs(runs):
    psnr = committed_psnr(f"{runs}/seed*")
    assert psnr, f"results/{runs} holds no run"
    stated = (f"{statistics.mean(psnr):.2f} ± {statistics.stdev(psnr):.2f}" if len(psnr) > 1
              else f"{psnr[0]:.2f}")
    assert stated in (REPO / "README.md").read_text()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_committed_gpu_dance_runs_are_the_gpu_preset_and_its_recipe_on_the_cpu_model(seed):
    """results/dance-gpu/ backs the README's GPU rows: the course's sizes are presets/dance-gpu.yaml
    with a seed; the preset-sizes runs are the same recipe with presets/dance.yaml's model."""
    seeded = {"train": {"seed": seed}}
    assert committed_params(f"dance-gpu/course-seed{seed}") == \
        parse(Params, preset_tree("dance-gpu", seeded))
    cpu_model = {"model": {"dance": {**preset_tree("dance")["model"]["dance"],
                                     "first_lookup_dim": 0, "plate": False}}}  # before both
    assert committed_params(f"dance-gpu/preset-sizes-seed{seed}") == \
        parse(Params, preset_tree("dance-gpu", {**seeded, **cpu_model}))


def test_the_committed_fp32_gpu_dance_run_is_the_gpu_preset_in_fp32():
    assert committed_params("dance-gpu/course-fp32") == \
        parse(Params, preset_tree("dance-gpu", {"train": {"precision": "fp32"}}))


@pytest.mark.parametrize("group", ["course-seed", "preset-sizes-seed"])
def test_the_readme_states_the_gpu_means_of_the_committed_runs(group):
    """The README's mean ± sd of each three-seed GPU group is what its eval.json files give."""
    psnr = committed_psnr(f"dance-gpu/{group}*")
    assert len(psnr) == 3
    stated = f"{statistics.mean(psnr):.2f} ± {statistics.stdev(psnr):.2f}"
    assert stated in (REPO / "README.md").read_text()
