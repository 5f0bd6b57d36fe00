"""Stage `check-params`: load the whole params.yaml strictly. DVC re-runs a stage only when a key
it lists changes, so a typo in a key no stage lists (`data.num_trian`, a section `trian:`) would
otherwise pass `dvc repro` unseen; this stage depends on the whole file and fails on it."""
from pipeline._cli import params, run


def main():
    params()
    print("params.yaml: every key known, every value valid")


if __name__ == "__main__":
    run(main)
