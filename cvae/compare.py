"""Experiments compared across seeds. DVC lists the experiments (`dvc exp show --json`); each
finished one becomes a row of a pandas table (its params, metrics and commit); the params that
differ between them, `train.seed` excepted, make up a *setting*; each setting is summarised as
mean ± sd over its seeds (a markdown table) and its training curves are overlaid with the seed
spread as a band (one figure). Not a pipeline stage: it reads every experiment's commit, not the
workspace, and never runs the model."""
from __future__ import annotations

import io
import itertools
import json
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from cvae.errors import UserError  # noqa: E402

SEED = "train.seed"
COMMIT = "commit"  # a setting column of its own when the experiments come from several commits
EPOCHS_LOG = "logs/train/epochs.tsv"
STEPS_LOG = "logs/train/steps.tsv"
EVAL, TRAIN = "metrics/eval.json", "metrics/train.json"
RULE = ("A difference of two settings exceeds the seed spread when their means differ by more "
        "than the sum of their standard deviations (the mean ± sd intervals do not overlap); "
        "a setting with one seed has no spread, so none of its differences can be judged.")


@dataclass(frozen=True)
class Metric:
    file: str  # the metrics file that holds it
    key: str
    title: str  # the table's header; {n} is the number of prior samples
    name: str  # in the list of differences
    spec: str  # format of its mean and sd
    unit: str = ""


METRICS = (
    Metric(EVAL, "psnr", "test PSNR (dB), mean of {n}", "test PSNR", ".3f", " dB"),
    Metric(EVAL, "psnr_best", "best of {n} (dB)", "best-of-N PSNR", ".3f", " dB"),
    Metric(EVAL, "ssim", "SSIM", "SSIM", ".4f"),
    Metric(TRAIN, "final_kl", "final KL (nats)", "final KL", "#.3g", " nats"),
    Metric(EVAL, "baseline_psnr", "copy baseline (dB)", "copy baseline PSNR", ".3f", " dB"),
)
STYLES = ("-", "--", "-.", ":")
HELD = ("beta", "tfr")  # held through each step (or epoch): drawn as steps
JUDGED = ("psnr", "psnr_best", "ssim", "final_kl")  # the baseline is the same data every run
NARROW = {"psnr": "PSNR", "psnr_best": "best of N", "ssim": "SSIM", "final_kl": "final KL"}


@dataclass(frozen=True)
class Runs:
    """The finished experiments that are compared, one row each: `experiment`, `rev` (its
    commit), `baseline`, `time`, every param (`train.seed`, ...), every metric of METRICS, and
    `setting` (its number in the table, from 1)."""

    table: pd.DataFrame
    params: list[str]  # the params that make a setting: those that differ, the seed excluded
    notes: list[str]  # the experiments left out, and why


# --- reading the experiments -------------------------------------------------------------------

def exp_show(args: list[str], repo: Path | None = None) -> list[dict]:
    """`dvc exp show --json` with `args` (e.g. `--rev main`, `-n 3`, `-A`): the baselines, each
    with its experiments. The command line's JSON is DVC's documented format; unlike
    `dvc.api.exp_show` it keeps params apart from metrics and gives every commit in full."""
    command = [sys.executable, "-m", "dvc", "exp", "show", "--json", *args]
    result = subprocess.run(command, cwd=repo, capture_output=True, text=True)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["(no message)"]
        message = lines[-1].removeprefix("ERROR: ")
        raise UserError(" ".join(["dvc exp show", *args]) + f": {message}")
    return json.loads(result.stdout)


def read_runs(shown: list[dict], names: list[str] = ()) -> Runs:
    """The finished experiments of `shown` (all, or those whose name or commit starts with one
    of `names`) and the params that set them apart. Queued, running and failed experiments,
    the workspace and the baseline commits are not runs; an experiment that repeats a setting's
    seed is left out in favour of the newer one (the same seed twice is not a second sample)."""
    found = [e for e in _experiments(shown) if _selected(e, names)]
    for name in names:
        if not any(_selected(e, [name]) for e in found):
            known = ", ".join(e["experiment"] for e in _experiments(shown)) or "none"
            raise UserError(f"no experiment {name!r} among the ones shown (known: {known})")
    notes = _left_out(found)
    done = [e for e in found if e["state"] == "success" and e["metrics"].get(EVAL)]
    if not done:
        raise UserError("no finished experiment to compare: " + ("; ".join(notes) if notes else
                        "dvc exp show lists none for these commits (README, \"Comparing "
                        "strategies\", has the sweep)"))
    table, params = _table(done)
    if SEED not in table:
        raise UserError(f"the experiments have no {SEED} in params.yaml: the seed is what the "
                        "runs of a setting differ in")
    params = _differing(table, params)
    table, repeated = _newest_per_seed(table, params)
    notes += repeated
    table["setting"] = _numbers(table, params)
    return Runs(table.sort_values(["setting", SEED], ignore_index=True), params, notes)


def _experiments(shown: list[dict]):
    """Every experiment below every baseline commit, flattened: name, commit, state, params
    (params.yaml, nested) and metrics (per file; None where the file could not be read)."""
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            rev = exp["revs"][0]  # DVC 3: one commit per experiment
            data = rev.get("data") or {}
            executor = exp.get("executor") or {}  # none for a run in the workspace
            yield {
                "experiment": exp.get("name") or rev.get("name") or rev["rev"][:7],
                "rev": rev["rev"],
                "baseline": baseline["rev"],
                "time": data.get("timestamp") or "",
                "state": executor.get("state") or ("failed" if rev.get("error") else "success"),
                "params": (data.get("params") or {}).get("params.yaml", {}).get("data") or {},
                "metrics": {path: found.get("data") for path, found in
                            (data.get("metrics") or {}).items()},
            }


def _selected(exp: dict, names) -> bool:
    return not names or any(exp["experiment"] == n or exp["rev"].startswith(n) for n in names)


def _left_out(found: list[dict]) -> list[str]:
    """One note per reason an experiment is not compared, naming the experiments."""
    reasons = {"queued": "queued (not run yet: `dvc queue start`)", "running": "still running",
               "failed": "failed (`dvc queue logs <name>` says why)"}
    notes = []
    for state, reason in reasons.items():
        names = [e["experiment"] for e in found if e["state"] == state]
        if names:
            notes.append(f"{len(names)} {reason}: {', '.join(names)}")
    unread = [e["experiment"] for e in found
              if e["state"] == "success" and not e["metrics"].get(EVAL)]
    if unread:
        notes.append(f"{len(unread)} without {EVAL}: {', '.join(unread)}")
    return notes


def _table(done: list[dict]) -> tuple[pd.DataFrame, list[str]]:
    """One row per experiment: who it is, its params as `section.key` columns (pandas
    flattens the nested params.yaml), and the metrics compared; and the params' names."""
    params = pd.json_normalize([e["params"] for e in done], sep=".")
    # A list value (or a mapping left empty) cannot be grouped on: compare its JSON text.
    params = params.map(lambda v: json.dumps(v) if isinstance(v, (list, dict)) else v)
    metrics = pd.DataFrame([{m.key: (e["metrics"].get(m.file) or {}).get(m.key) for m in METRICS}
                            for e in done], dtype=float)
    who = pd.DataFrame([{k: e[k] for k in ("experiment", "rev", "baseline", "time")} for e in done])
    who[COMMIT] = who["baseline"].str[:7]
    return pd.concat([who, params, metrics], axis=1), list(params.columns)


def _differing(table: pd.DataFrame, params: list[str]) -> list[str]:
    """The params whose value is not the same in every run, `train.seed` excepted, plus the
    commit when the runs come from several (another commit may be other code)."""
    differing = [c for c in params if c != SEED and table[c].astype(str).nunique(dropna=False) > 1]
    return ([COMMIT] if table[COMMIT].nunique() > 1 else []) + differing


def _newest_per_seed(table: pd.DataFrame, params: list[str]) -> tuple[pd.DataFrame, list[str]]:
    newest = table.sort_values("time", ascending=False)
    repeats = newest.astype(str).duplicated(subset=[*params, SEED])
    notes = [f"{len(newest[repeats])} repeating the setting and seed of a newer experiment: "
             f"{', '.join(newest[repeats]['experiment'])}"] if repeats.any() else []
    return newest[~repeats], notes


def _numbers(table: pd.DataFrame, params: list[str]) -> pd.Series:
    """Each run's setting number, 1, 2, ... in the order of the params' values (numbers by
    value, the rest as text)."""
    keys = table[params].apply(lambda row: tuple(_order(v) for v in row), axis=1) if params \
        else pd.Series([()] * len(table), index=table.index)
    order = {key: k for k, key in enumerate(sorted(set(keys)), start=1)}
    return keys.map(order)


def _order(value) -> tuple:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
        return (0, float(value), "")
    return (1, 0.0, str(value))


# --- the table -----------------------------------------------------------------------------------

def summarise(runs: Runs) -> pd.DataFrame:
    """One row per setting (indexed by its number): the setting's params, n, the seeds, and
    each metric's mean and sample standard deviation (n - 1) over the seeds."""
    grouped = runs.table.groupby("setting")
    summary = (grouped[runs.params].first() if runs.params
               else pd.DataFrame(index=grouped.size().index))
    summary["n"] = grouped.size()
    summary["seeds"] = grouped[SEED].agg(lambda s: ", ".join(str(v) for v in sorted(s)))
    for m in METRICS:
        summary[f"{m.key}_mean"] = grouped[m.key].mean()
        summary[f"{m.key}_sd"] = grouped[m.key].std()
    return summary


def beyond_spread(summary: pd.DataFrame, key: str) -> list[tuple[int, int, float]]:
    """(a, b, mean_a - mean_b > 0) for every pair of settings whose `key` differs by more than
    the sum of the two standard deviations (RULE); settings of one seed are not judged."""
    pairs = []
    for a, b in itertools.combinations(summary.index, 2):
        diff = summary.at[a, f"{key}_mean"] - summary.at[b, f"{key}_mean"]
        spread = summary.at[a, f"{key}_sd"] + summary.at[b, f"{key}_sd"]
        if abs(diff) > spread:  # False where a spread is NaN (one seed) or a mean is missing
            pairs.append((a, b, diff) if diff > 0 else (b, a, -diff))
    return pairs


def markdown(summary: pd.DataFrame, runs: Runs) -> str:
    """The table, one row per setting, and below it the rule and which differences exceed the
    seed spread (for every metric), then what was left out."""
    samples = _samples(runs.table)
    table = summary[runs.params].copy() if runs.params else pd.DataFrame(
        {"setting": "all runs (no param differs)"}, index=summary.index)
    table.insert(0, "#", summary.index)
    table["n"] = summary["n"]
    table["seeds"] = summary["seeds"]
    for m in METRICS:
        table[m.title.format(n=samples)] = [_mean_sd(row[f"{m.key}_mean"], row[f"{m.key}_sd"],
                                                     m.spec) for _, row in summary.iterrows()]
    align = ["right"] + ["left"] * (len(table.columns) - 3 - len(METRICS)) + ["right"] * (
        2 + len(METRICS))  # the number, the params; n, seeds and the metrics
    lines = [table.to_markdown(index=False, disable_numparse=True, colalign=align), "",
             f"Mean ± sd over the seeds of each setting (sample standard deviation). {RULE}"]
    single = [f"#{k}" for k in summary.index[summary["n"] < 2]]
    unjudged = f" ({', '.join(single)}: one seed, not judged)" if 0 < len(single) < len(summary) \
        else ""
    lines += ["", f"Differences beyond the seed spread{unjudged}:", ""] + [
        f"- {_pairs_line(summary, m)}" for m in METRICS if m.key in JUDGED]
    if runs.notes:
        lines += ["", "Not compared: " + "; ".join(runs.notes) + "."]
    return "\n".join(lines) + "\n"


def _samples(table: pd.DataFrame) -> str:
    """N of "best of N": `eval.num_samples` when all runs share it."""
    values = table["eval.num_samples"].unique() if "eval.num_samples" in table else []
    return str(values[0]) if len(values) == 1 else "N samples"


def _mean_sd(mean: float, sd: float, spec: str) -> str:
    if pd.isna(mean):
        return "–"
    return f"{mean:{spec}}" if pd.isna(sd) else f"{mean:{spec}} ± {sd:{spec}}"


def _pairs_line(summary: pd.DataFrame, m: Metric) -> str:
    name = m.name
    if (summary["n"] < 2).all():
        return f"{name}: none can be judged (one seed per setting)"
    pairs = beyond_spread(summary, m.key)
    if not pairs:
        return f"{name}: none"
    return f"{name}: " + ", ".join(f"#{a} − #{b} = +{d:{m.spec}}{m.unit}" for a, b, d in pairs)


def terminal(summary: pd.DataFrame, runs: Runs, width: int = 100) -> str:
    """The table for a terminal of `width` columns: the params by their shortest unambiguous
    names, each metric's mean ± sd in a narrow column; when the settings do not fit beside
    the numbers, they are listed under the table instead. Then the differences beyond the
    seed spread and what was left out, wrapped to `width`."""
    names = _short_names(runs.params)
    numbers = pd.DataFrame({"#": summary.index, "n": summary["n"]}, index=summary.index)
    for m in METRICS:
        if m.key in NARROW:
            numbers[NARROW[m.key]] = [
                _mean_sd(row[f"{m.key}_mean"], row[f"{m.key}_sd"], _narrow(m.spec))
                for _, row in summary.iterrows()]
    settings = summary[runs.params].rename(columns=names).astype(str) if runs.params else None
    table = numbers if settings is None else pd.concat(
        [numbers[["#"]], settings, numbers.drop(columns="#")], axis=1)
    text = table.to_string(index=False)
    key = []
    if max(map(len, text.splitlines())) > width and settings is not None:
        text = numbers.to_string(index=False)
        key = [textwrap.fill(f"#{k}: " + ", ".join(f"{names[p]}={summary.at[k, p]}"
                                                   for p in runs.params),
                             width, subsequent_indent="    ") for k in summary.index]
    lines = [text, *key, "", textwrap.fill(
        "Mean ± sd over the n seeds of each setting; PSNR in dB, final KL in nats per training "
        "sequence. Differences beyond the seed spread (means apart by more than the sum of the "
        "two sds):", width)]
    lines += [textwrap.fill(f"- {_pairs_line(summary, m)}", width, subsequent_indent="  ")
              for m in METRICS if m.key in JUDGED]
    if runs.notes:
        lines.append(textwrap.fill("Not compared: " + "; ".join(runs.notes) + ".", width))
    return "\n".join(lines) + "\n"


def _short_names(params: list[str]) -> dict[str, str]:
    """Each param by the fewest trailing parts of its name that no other param ends with:
    `train.kl.type` -> `kl.type` beside `model.prior` -> `prior`."""
    short = {}
    for param in params:
        parts = param.split(".")
        for k in range(1, len(parts) + 1):
            tail = ".".join(parts[-k:])
            if not any(o != param and (o == tail or o.endswith("." + tail)) for o in params) \
                    and (k > 1 or tail not in ("type", "seed", "size")):
                short[param] = tail
                break
        else:
            short[param] = param
    return short


def _narrow(spec: str) -> str:
    """One digit fewer than the markdown table shows."""
    return {".3f": ".2f", ".4f": ".3f"}.get(spec, spec)


# --- the figure ----------------------------------------------------------------------------------

def read_logs(runs: Runs, repo: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """epochs.tsv and steps.tsv of every run, read at its commit (they are `cache: false`
    outputs, so DVC finds them in git), each row tagged with its `run` and `setting`; and a
    note per run whose logs are missing."""
    import dvc.api  # noqa: PLC0415 (seconds to import: only the figure needs it)
    from dvc.exceptions import PathMissingError  # noqa: PLC0415

    epochs, steps, missing = [], [], []
    for run in runs.table.itertuples():
        try:
            logs = [pd.read_csv(io.StringIO(dvc.api.read(path, rev=run.rev, repo=repo)), sep="\t")
                    for path in (EPOCHS_LOG, STEPS_LOG)]
        except PathMissingError:
            missing.append(run.experiment)
            continue
        for log, into in zip(logs, (epochs, steps)):
            into.append(log.assign(run=run.experiment, setting=run.setting))
    notes = [f"no training logs in {', '.join(missing)}: not in the figure"] if missing else []
    if not epochs:
        raise UserError(f"none of the experiments has {EPOCHS_LOG} and {STEPS_LOG}")
    return pd.concat(epochs, ignore_index=True), pd.concat(steps, ignore_index=True), notes


def figure(summary: pd.DataFrame, runs: Runs, epochs: pd.DataFrame, steps: pd.DataFrame,
           out: Path) -> None:
    """Four panels (validation PSNR per epoch; KL, beta and tfr per step), one colour per
    setting: the mean over its seeds as a line, their min to max as a band. 900 px wide."""
    labels = {k: _label(summary, runs.params, k) for k in summary.index}
    columns = 1 if max(map(len, labels.values())) > 45 else 2
    rows = -(-len(labels) // columns)
    fig, axes = plt.subplots(2, 2, figsize=(9, 6.2 + 0.22 * rows), layout="constrained")
    window = max(1, steps.groupby("run").size().min() // 50)
    # The KL of one step is noisy: smooth each run before taking the spread across seeds.
    steps = steps.assign(kl_smooth=steps.groupby("run")["kl"].transform(
        lambda kl: kl.rolling(window, min_periods=1).mean()))
    smoothed = f"mean of {window} steps" if window > 1 else "each step"
    panels = [(axes[0, 0], epochs, "epoch", "val_psnr", "validation PSNR (dB)", "epoch (from 0)"),
              (axes[0, 1], steps, "step", "kl_smooth",
               f"KL per sequence (nats, summed over latent\ndims and steps), {smoothed}",
               "optimiser step"),
              (axes[1, 0], steps, "step", "beta", "KL weight beta", "optimiser step"),
              (axes[1, 1], steps, "step", "tfr", "teacher forcing ratio", "optimiser step")]
    colours = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    handles = []
    for k in summary.index:
        # Dashes as well as colours: settings whose curves coincide (a shared schedule) stay
        # visible one over the other.
        style = {"color": colours((k - 1) % colours.N), "ls": STYLES[(k - 1) % len(STYLES)]}
        lines = [_band(ax, data[data["setting"] == k], x, y, style, steps=y in HELD)
                 for ax, data, x, y, _, _ in panels]
        handles.append(lines[0])
    for ax, _, _, _, title, xlabel in panels:
        ax.set(title=title, xlabel=xlabel)
    axes[0, 0].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[1, 0].ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    baseline = epochs.groupby("epoch")["val_baseline_psnr"].mean()
    axes[0, 0].plot(baseline.index, baseline.values, ls="--", color="0.45", label="copy baseline")
    axes[0, 0].legend(loc="lower right", fontsize=8)
    if (steps["kl_smooth"] > 0).all():
        axes[0, 1].set_yscale("log")
    fig.suptitle("Per setting: line = mean over seeds, band = min to max across seeds")
    fig.legend(handles, labels.values(), loc="outside lower center", ncols=columns, fontsize=9)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def _band(ax, data: pd.DataFrame, x: str, y: str, style: dict, steps: bool = False):
    """The mean over the seeds as a line, their min to max as a band; `steps`: a value held
    from one x to the next (beta, tfr), drawn as steps rather than ramps."""
    across = data.groupby(x)[y].agg(["mean", "min", "max"])  # over the seeds, at each x
    ax.fill_between(across.index, across["min"], across["max"], color=style["color"], alpha=0.25,
                    lw=0, step="post" if steps else None)
    return ax.plot(across.index, across["mean"], lw=1.5, drawstyle="steps-post" if steps
                   else "default", **style)[0]


def _label(summary: pd.DataFrame, params: list[str], k: int) -> str:
    setting = ", ".join(f"{p}={summary.at[k, p]}" for p in params) or "all runs"
    n = summary.at[k, "n"]
    return f"#{k} {setting} ({n} seed{'s' if n > 1 else ''})"


def write(summary: pd.DataFrame, runs: Runs, epochs: pd.DataFrame, steps: pd.DataFrame,
          out: Path, notes: list[str] = ()) -> str:
    """`out/compare.md` (the table), `out/compare.tsv` (its numbers in full) and
    `out/compare.png` (the figure); returns the table."""
    out.mkdir(parents=True, exist_ok=True)
    runs = Runs(runs.table, runs.params, [*runs.notes, *notes])
    text = markdown(summary, runs)
    (out / "compare.md").write_text(text)
    summary.rename_axis("#").to_csv(out / "compare.tsv", sep="\t")
    figure(summary, runs, epochs, steps, out / "compare.png")
    return text
