"""The dance track's report: the long-rollout PSNR curve, one GIF per test sequence (ground truth
| label | prediction), a grid of `GRID_ROWS` evenly spaced time steps, and the summary."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from cvae.figures import (CONDITIONING, PREDICTED, ReportInputs, Sheet, draw_sheet,
                          empty_gif_folder, figures_markdown, framed_tile, kl_sentence,
                          per_frame_plot, training_curves, training_sentence)

GIVEN = (90, 90, 90)  # border of a label: an input at every step
GRID_ROWS = 10
MOVING = "where the truth differs from the first frame by more than {:g}"


def _columns(saved: dict, k: int) -> list[tuple[str, np.ndarray, tuple]]:
    """(header, frames (T, C, H, W), border) per GIF column of sequence k. The truth column is
    left out when only the first frame is known (the course's test split)."""
    truth, labels, prediction = saved["truth"][k], saved["labels"][k], saved["prediction"][k]
    columns = [("ground truth", truth, CONDITIONING)] if len(truth) == len(labels) else []
    return columns + [("pose label\n(input)", labels, GIVEN), ("prediction", prediction, PREDICTED)]


def _sheet(columns, k: int, metrics: dict) -> Sheet:
    return Sheet(
        title=f"Sequence {k} of the {metrics['scored_split']} split: {metrics['model']}",
        key=[(CONDITIONING, "true frame: the ground truth, and t = 0, given"),
             (GIVEN, "pose label (given)"),
             (PREDICTED, "predicted")],
        notes=[f"The first of {metrics['num_samples']} prior samples; the model sees its own "
               "predictions."],
        headers=[header for header, _, _ in columns])


def _tiles(columns, t: int) -> list:
    return [framed_tile(frames[t], CONDITIONING if t == 0 else border)
            for _, frames, border in columns]


def sequence_gif(columns, sheet: Sheet, fps: int, out: Path) -> None:
    """Every frame of a sequence, the columns side by side; t = 0 is the given first frame."""
    length = len(columns[-1][1])
    frames = []
    for t in range(length):
        status = f"t = {t} (frame {t + 1} of {length}): " + ("given" if t == 0 else "predicted")
        frame_sheet = Sheet(sheet.title, sheet.key, [*sheet.notes, status], sheet.headers)
        frames.append(draw_sheet(frame_sheet, [("", _tiles(columns, t))]))
    frames[0].save(out, save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)


def sequence_grid(columns, sheet: Sheet, out: Path) -> None:
    """A PNG: GRID_ROWS evenly spaced time steps down the page, one column per GIF column."""
    steps = np.linspace(0, len(columns[-1][1]) - 1, GRID_ROWS).round().astype(int)
    rows = [(str(t), _tiles(columns, t)) for t in dict.fromkeys(steps)]  # short: no repeats
    grid_sheet = Sheet(sheet.title, sheet.key, sheet.notes, sheet.headers, corner="t")
    draw_sheet(grid_sheet, rows).save(out)


def summary_markdown(metrics: dict, train_metrics: dict, sequence: int) -> str:
    n, split = metrics["num_samples"], metrics["scored_split"]
    moving = MOVING.format(metrics["moving_threshold"])
    rows = [(f"{metrics['model']}, mean of {n} samples", "psnr", "psnr_moving", "ssim"),
            (f"{metrics['model']}, best of {n} (by SSIM)", "psnr_best", "psnr_moving_best",
             "ssim_best"),
            (f"{metrics['model']}, posterior (sees the future: upper reference)",
             "posterior_psnr", "posterior_psnr_moving", "posterior_ssim"),
            ("copy the first frame", "baseline_psnr", "baseline_psnr_moving", "baseline_ssim")]

    def cell(key, fmt):
        return format(metrics[key], fmt) if key in metrics else "–"

    return "\n".join([
        f"# Dance rollouts ({split} split)",
        "",
        f"{metrics['sequences']} sequences, each predicted from its first frame and all its "
        f"labels: {metrics['n_future']} frames, the model fed its own predictions, {n} prior "
        "samples each. PSNR per image, then averaged over frames and sequences (dB); moving "
        f"pixels: the PSNR over the pixels {moving} (in [0, 1], in any colour channel), where "
        "copying that frame is wrong. SSIM 11x11 Gaussian window, sigma 1.5.",
        "",
        "| predictor | PSNR | PSNR, moving pixels | SSIM |",
        "|---|---|---|---|",
        *[f"| {name} | {cell(p, '.2f')} | {cell(m, '.2f')} | {cell(s, '.4f')} |"
          for name, p, m, s in rows if p in metrics],
        "",
        f"Submission: eval/submission.csv, {metrics['submission_rows']} rows (the test sequences' "
        "frames, the first given).",
        "",
        training_sentence(train_metrics),
        "",
        kl_sentence(train_metrics),
        "",
        *figures_markdown(sequence, moving),
    ])


def write_report(inputs: ReportInputs, sequence: int, fps: int, out: Path) -> None:
    """Everything in `out`, as the robot track names it: training_curves.png,
    per_frame_psnr.png (over the whole rollout), gifs/sequence-<i>.gif, prediction.gif
    (sequence `sequence`), prediction_grid.png and summary.md."""
    gifs = empty_gif_folder(out)
    saved, metrics = inputs.saved, inputs.metrics
    training_curves(inputs.steps, inputs.epochs, inputs.train_metrics,
                    out / "training_curves.png", baseline="copy the first frame")
    per_frame_plot(inputs.per_frame, out / "per_frame_psnr.png", baseline="copy the first frame",
                   title=f"PSNR per frame over the whole rollout, mean over {metrics['sequences']} "
                   f"sequences ({metrics['scored_split']})",
                   moving=MOVING.format(metrics["moving_threshold"]), long=True)
    for k in range(len(saved["truth"])):
        columns = _columns(saved, k)
        sequence_gif(columns, _sheet(columns, k, metrics), fps, gifs / f"sequence-{k}.gif")
    shutil.copyfile(gifs / f"sequence-{sequence}.gif", out / "prediction.gif")
    columns = _columns(saved, sequence)
    sequence_grid(columns, _sheet(columns, sequence, metrics), out / "prediction_grid.png")
    (out / "summary.md").write_text(summary_markdown(metrics, inputs.train_metrics, sequence))
