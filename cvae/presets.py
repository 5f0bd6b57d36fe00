"""Presets and recipes: YAML files of settings that override `params.yaml` (`presets/<name>.yaml`,
the runs a user is meant to run today; a study's `recipe.yaml`, what one of its runs ran),
merged over it as `dvc exp run -S` would merge them."""
from __future__ import annotations

from pathlib import Path

from cvae.config import ConfigError, Params, parse, read_yaml

PRESETS = Path(__file__).resolve().parents[1] / "presets"


def names() -> list[str]:
    return sorted(p.stem for p in PRESETS.glob("*.yaml"))


def overrides_file(name: str) -> Path:
    """A preset's name (`presets/<name>.yaml`), or the path of a YAML file of overrides."""
    if name in names():
        return PRESETS / f"{name}.yaml"
    if name.endswith((".yaml", ".yml")) and Path(name).is_file():
        return Path(name)
    raise ConfigError(f"presets/{name}.yaml: no such preset (there are: {', '.join(names())}; "
                      "or give the path of a recipe.yaml)")


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"train": {"lr": 1}} -> {"train.lr": 1}"""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        out.update(flatten(value, f"{name}.") if isinstance(value, dict) else {name: value})
    return out


def merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return out


def merged_tree(name: str, params: Path = Path("params.yaml")) -> dict:
    """`params` with the preset or recipe `name` merged over it: the tree its run reads."""
    return merge(read_yaml(params), read_yaml(overrides_file(name)))


def set_params(name: str, params: Path = Path("params.yaml")) -> str:
    """`-S key=value ...` for `dvc exp run`: the preset or recipe `name`, checked merged over
    `params` first (a bad value fails here, not mid-run)."""
    try:
        parse(Params, merged_tree(name, params))
    except ConfigError as error:
        raise ConfigError(f"{overrides_file(name)}: {error}") from None
    tree = read_yaml(overrides_file(name))
    return " ".join(f"-S {key}={value}" for key, value in flatten(tree).items())
