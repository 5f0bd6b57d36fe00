"""The manual's promises: the README stays a manual (at most 400 lines), every `dvc exp run` command
in the README, docs/ and experiments/ runs valid settings (each `-S` key exists, each value of a
sweep is a valid value, each preset or recipe exists), and every relative link leads to a file."""
import re
import shlex
from functools import reduce
from pathlib import Path

import pytest
from dvc.utils.serialize import parse_yaml

from cvae.config import Params, parse
from cvae.presets import merge, merged_tree

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")),
         *sorted((REPO / "experiments").rglob("README.md"))]


def commands(page: Path) -> list[str]:
    """The `dvc exp run` commands of a page's code blocks, each on one line."""
    blocks = re.findall(r"```bash\n(.*?)```", page.read_text(), re.S)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [" ".join(line.split("#")[0].split()) for line in lines
            if line.lstrip().startswith("dvc exp run")]


COMMANDS = [(page.relative_to(REPO).as_posix(), command) for page in PAGES
            for command in commands(page)]


def test_the_readme_is_a_manual_of_at_most_400_lines():
    assert len((REPO / "README.md").read_text().splitlines()) <= 400


def test_every_page_with_commands_was_read():
    assert {page for page, _ in COMMANDS} >= {"README.md", "docs/dance.md",
                                              "experiments/annealing-study/README.md"}


@pytest.mark.parametrize("page, command", COMMANDS)
def test_every_dvc_exp_run_command_runs_valid_settings(page, command):
    """As DVC does: the preset's or recipe's overrides, then each `-S key=value` (YAML 1.2
    values; every value of a comma-separated sweep), merged over params.yaml and checked."""
    words = shlex.split(command.replace("$(python -m pipeline.preset ", "PRESET=").replace(")", ""))
    base = {}
    for word in words:
        if word.startswith("PRESET="):
            name = word.removeprefix("PRESET=")
            base = merged_tree(str(REPO / name) if name.endswith(".yaml") else name,
                               REPO / "params.yaml")
    base = base or parse_yaml((REPO / "params.yaml").read_text(), "params.yaml")
    sweeps = [setting for flag, setting in zip(words, words[1:])
              if flag == "-S" and "=" in setting]  # (`-S ...` stands for the user's own)
    for index in range(max([len(s.split("=", 1)[1].split(",")) for s in sweeps] + [1])):
        changes = {}
        for setting in sweeps:
            key, values = setting.split("=", 1)
            value = values.split(",")[min(index, values.count(","))]
            value = parse_yaml(f"v: {value}", "-S")["v"]
            changes = merge(changes, reduce(lambda tree, name: {name: tree},
                                            reversed(key.split(".")), value))
        parse(Params, merge(base, changes))  # raises, naming the key, on a bad one


def links(page: Path) -> list[str]:
    return [target for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text())
            if "://" not in target]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_leads_to_a_file(page):
    missing = [target for target in links(page) if not (page.parent / target).exists()]
    assert missing == []
