"""Print a preset (presets/<name>.yaml) as `dvc exp run` overrides: `-S key=value ...`.

    dvc exp run -n bair-lab $(python -m pipeline.preset bair-lab)

The preset is merged over params.yaml and checked first, so a bad one fails here, not mid-run.
On an error (an unknown preset, a bad value) it prints the message on stderr and, on stdout,
`--preset-failed`, an argument that `dvc exp run` refuses: the shell runs the command above even
when the substitution fails, and it must not start an experiment with the defaults.
"""
import argparse
import sys
from pathlib import Path

from cvae.config import ConfigError, Params, parse, read_yaml

PRESETS = Path(__file__).resolve().parents[1] / "presets"


def flatten(tree: dict, prefix: str = "") -> dict:
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
    """`params` with presets/<name>.yaml merged over it: the tree a run of the preset reads."""
    return merge(read_yaml(params), read_yaml(PRESETS / f"{name}.yaml"))


FAILED = "--preset-failed"  # not an option of `dvc exp run`: it stops with "unrecognized arguments"


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="a preset: " + ", ".join(names()))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    try:
        print(overrides(args.name, args.params))
    except ConfigError as error:
        print(FAILED)
        sys.exit(f"error: {error}")


def names() -> list[str]:
    return sorted(p.stem for p in PRESETS.glob("*.yaml"))


def overrides(name: str, params: Path) -> str:
    """`-S key=value ...` of presets/<name>.yaml, checked merged over `params`."""
    if name not in names():
        raise ConfigError(f"presets/{name}.yaml: no such preset (there are: {', '.join(names())})")
    try:
        parse(Params, merged_tree(name, params))
    except ConfigError as error:
        raise ConfigError(f"presets/{name}.yaml: {error}") from None
    preset = read_yaml(PRESETS / f"{name}.yaml")
    return " ".join(f"-S {key}={value}" for key, value in flatten(preset).items())


if __name__ == "__main__":
    main()
