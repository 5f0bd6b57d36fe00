"""Print a preset (presets/<name>.yaml), or a study's recipe.yaml, as `dvc exp run` overrides:
`-S key=value ...`.

    dvc exp run -n bair-lab $(python -m pipeline.preset bair-lab)
    dvc exp run $(python -m pipeline.preset experiments/dance-preset/preset/seed2/recipe.yaml)

It is merged over params.yaml and checked first, so a bad one fails here, not mid-run. On an
error (an unknown preset, a bad value) it prints the message on stderr and, on stdout,
`--preset-failed`, an argument that `dvc exp run` refuses: the shell runs the command above even
when the substitution fails, and it must not start an experiment with the defaults.
"""
import argparse
import sys
from pathlib import Path

from cvae.config import ConfigError
from cvae.presets import names, set_params

FAILED = "--preset-failed"  # not an option of `dvc exp run`: it stops with "unrecognized arguments"


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="a preset (" + ", ".join(names()) + ") or a recipe.yaml")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    try:
        print(set_params(args.name, args.params))
    except ConfigError as error:
        print(FAILED)
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
