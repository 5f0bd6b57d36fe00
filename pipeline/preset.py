"""Print a preset (presets/<name>.yaml) as `dvc exp run` overrides: `-S key=value ...`.

    dvc exp run -n bair-lab $(python -m pipeline.preset bair-lab)

The preset is merged over params.yaml and checked first, so a bad one fails here, not mid-run.
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


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    names = sorted(p.stem for p in PRESETS.glob("*.yaml"))
    parser.add_argument("name", choices=names)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    try:
        parse(Params, merged_tree(args.name, args.params))
    except ConfigError as error:
        sys.exit(f"presets/{args.name}.yaml: {error}")
    preset = read_yaml(PRESETS / f"{args.name}.yaml")
    print(" ".join(f"-S {key}={value}" for key, value in flatten(preset).items()))


if __name__ == "__main__":
    main()
