"""Figures and tables both tracks' reports are made of, and the report's inputs: the training
logs, the evaluate stage's outputs and metrics. No model is run here."""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import font_manager, ticker  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from cvae.errors import UserError  # noqa: E402
from cvae.losses import COLLAPSED_BELOW  # noqa: E402

CONDITIONING = (40, 170, 60)  # frame border: a true frame (given, or the ground truth)
PREDICTED = (210, 50, 50)  # frame border: a frame the model predicted
SCALE = 2  # GIF and grid pixels per frame pixel
MAX_WIDTH = 680  # px, every image of the report: two revisions side by side fit in 1400 px
FIGURE_WIDTH = 6.8  # inches at DPI: the matplotlib figures are 680 px wide
DPI = 100
TEXT_SIZE = 13  # px, the text of GIFs and grids


@dataclass
class ReportInputs:
    steps: pd.DataFrame  # logs/train/steps.tsv
    epochs: pd.DataFrame  # logs/train/epochs.tsv
    per_frame: pd.DataFrame  # logs/eval/per_frame.tsv
    saved: dict[str, np.ndarray]  # eval/samples.npz: the frames evaluate kept
    metrics: dict  # metrics/eval.json
    train_metrics: dict  # metrics/train.json


def read_inputs(train_logs: Path, eval_logs: Path, samples_path: Path, metrics_dir: Path,
                sequence: int) -> ReportInputs:
    """What a report is made from; `sequence` (the one shown in the GIF and grid) must be
    among the saved ones."""
    with np.load(samples_path) as npz:
        saved = dict(npz)
    if sequence >= (count := len(saved["truth"])):
        raise UserError(f"report.sequence: {sequence}, but the evaluate stage saved {count} test "
                        f"sequence{'s' if count > 1 else ''} ({samples_path}: eval.keep of them, "
                        f"or all the test split has): choose 0 to {count - 1}")
    return ReportInputs(
        steps=pd.read_csv(train_logs / "steps.tsv", sep="\t"),
        epochs=pd.read_csv(train_logs / "epochs.tsv", sep="\t"),
        per_frame=pd.read_csv(eval_logs / "per_frame.tsv", sep="\t"),
        saved=saved,
        metrics=json.loads((metrics_dir / "eval.json").read_text()),
        train_metrics=json.loads((metrics_dir / "train.json").read_text()))


def empty_gif_folder(out: Path) -> Path:
    """`out/gifs`, emptied: no GIF of a sequence from an earlier run stays behind."""
    gifs = out / "gifs"
    if gifs.exists():
        shutil.rmtree(gifs)
    gifs.mkdir(parents=True)
    return gifs


def training_sentence(train_metrics: dict) -> str:
    """The summary's line on training, and which checkpoint was evaluated."""
    return (f"Training: {train_metrics['epochs']} epochs, {train_metrics['steps']} steps on "
            f"{train_metrics['device']}; best validation PSNR "
            f"{train_metrics['best_val_psnr']:.2f} dB at epoch {train_metrics['best_epoch']} "
            "(from 0; the checkpoint evaluated).")


def has_collapsed(train_metrics: dict) -> bool:
    return train_metrics["final_kl_per_step"] < COLLAPSED_BELOW


def kl_sentence(train_metrics: dict) -> str:
    """The summary's line on the final KL, and whether the posterior has collapsed."""
    verdict = ("**The posterior has collapsed**: the latent carries almost no information about "
               "the frames, so the prior samples, the best sample and the posterior hardly differ."
               if has_collapsed(train_metrics) else
               "The posterior has not collapsed: it differs from the prior. Whether the decoder "
               "uses what it carries shows in the table above: the posterior and the best sample "
               "against the mean of the samples.")
    return (f"Final KL (the last epoch's mean): {train_metrics['final_kl']:.4g} nats per training "
            f"sequence, {train_metrics['final_kl_per_step']:.4g} nats per step (summed over the "
            f"latent dimensions). {verdict} The rule: the posterior has collapsed when the final "
            f"KL is below {COLLAPSED_BELOW} nats per step.")


def figures_markdown(sequence: int, moving: str) -> list[str]:
    """The summary's section that shows the report's figures (paths relative to summary.md)."""
    return [
        "## Figures",
        "",
        "![Training: loss and KL (log scales), KL weight beta, teacher forcing ratio, validation "
        "PSNR and SSIM](training_curves.png)",
        "",
        f"![PSNR per frame: whole frame, and only the pixels that move ({moving})]"
        "(per_frame_psnr.png)",
        "",
        f"![Test sequence {sequence}: the predictions beside the ground truth, time down the "
        "page](prediction_grid.png)",
        "",
        f"![Test sequence {sequence} as a GIF](prediction.gif) Every saved test sequence: "
        "[gifs/](gifs/).",
        "",
    ]


def _per_step(ax, steps: pd.DataFrame, column: str, colour: str) -> None:
    """A per-step curve, faint, under its running mean: the trend shows through the noise."""
    window = max(1, len(steps) // 50)
    ax.plot(steps["step"], steps[column], color=colour, alpha=0.3 if window > 1 else 1, lw=0.8,
            label="per step")
    if window > 1:
        ax.plot(steps["step"], steps[column].rolling(window, min_periods=1).mean(), color=colour,
                label=f"mean of {window} steps")


def _plain_log_ticks(ax) -> None:
    """Log y ticks as plain numbers (0.05, not 5x10^-2); 2 and 5 times a power of ten labelled
    too when the axis spans less than three decades, so a short axis has labels."""
    low, high = ax.get_ylim()

    def minor(value, _):
        return f"{value:g}" if high / low < 1000 and f"{value:.0e}"[0] in "25" else ""
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(ticker.FuncFormatter(minor))


def _loss_and_kl(loss, kl, steps: pd.DataFrame, train_metrics: dict) -> None:
    """Log axes: the KL of a collapsed posterior, near 0, shows as such. The collapse threshold,
    a KL per step, is drawn per sequence, the axis's unit."""
    _per_step(loss, steps, "loss", "tab:blue")
    loss.set(title="loss = MSE + β·KL", yscale="log",
             ylabel="per sequence (log)\nMSE summed over steps")
    _per_step(kl, steps, "kl", "tab:purple")
    if train_metrics["final_kl_per_step"] > 0:  # the threshold, in nats per sequence
        per_sequence = train_metrics["final_kl"] / train_metrics["final_kl_per_step"]
        kl.axhline(COLLAPSED_BELOW * per_sequence, color="black", ls="--", lw=1,
                   label=f"collapsed below: {COLLAPSED_BELOW} nats/step x {per_sequence:g}")
    kl.set(title="KL to the prior", yscale="log",
           ylabel="nats per sequence (log), summed\nover latent dims and steps")
    for ax in (loss, kl):
        ax.set_xlabel("optimiser step")
        _legend_above_the_data(ax)
        _plain_log_ticks(ax)


def _legend_above_the_data(ax) -> None:
    """Room at the top of a log axis for the legend, so that it covers no curve or line."""
    low, high = ax.get_ylim()
    ax.set_ylim(low, high * (high / low) ** 0.45)
    ax.legend(loc="upper right", ncols=1)


def _schedules(beta, tfr, steps: pd.DataFrame) -> None:
    """One axis each: beta (~1e-4) drawn beside tfr (0..1) would be a flat line at 0. Both hold
    their value through a step (beta through an epoch when counted in epochs, tfr always):
    drawn as steps, not ramps between the steps' values."""
    beta.plot(steps["step"], steps["beta"], color="tab:red", drawstyle="steps-post")
    beta.set(title="KL weight β (annealing)", ylabel="β (no unit)", xlabel="optimiser step")
    beta.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))  # 2e-05
    tfr.plot(steps["step"], steps["tfr"], color="tab:orange", drawstyle="steps-post")
    tfr.set(title="teacher forcing ratio", ylabel="P(true previous frame fed)",
            xlabel="optimiser step", ylim=(-0.05, 1.05))


def _validation(psnr, ssim, epochs: pd.DataFrame, baseline: str) -> None:
    psnr.plot(epochs["epoch"], epochs["val_psnr"], marker="o", ms=3, color="tab:blue",
              label="model")
    psnr.plot(epochs["epoch"], epochs["val_baseline_psnr"], ls="--", color="tab:gray",
              label=baseline)
    psnr.set(title="validation PSNR", ylabel="PSNR per image (dB)", xlabel="epoch (from 0)")
    psnr.legend(loc="best")
    ssim.plot(epochs["epoch"], epochs["val_ssim"], marker="o", ms=3, color="tab:blue")
    ssim.set(title="validation SSIM (model)", ylabel="SSIM (no unit, at most 1)",
             xlabel="epoch (from 0)")
    for ax in (psnr, ssim):
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))  # no epoch 0.5


def training_curves(steps: pd.DataFrame, epochs: pd.DataFrame, train_metrics: dict, out: Path,
                    baseline: str = "copy last frame") -> None:
    """Six panels, one quantity each, 680 px wide: loss, KL, beta, tfr (per step), validation
    PSNR and SSIM (per epoch)."""
    with plt.rc_context({"font.size": 9, "axes.titlesize": 10, "legend.fontsize": 8}):
        fig, ((loss, kl), (beta, tfr), (psnr, ssim)) = plt.subplots(
            3, 2, figsize=(FIGURE_WIDTH, 7.6), dpi=DPI)
        _loss_and_kl(loss, kl, steps, train_metrics)
        _schedules(beta, tfr, steps)
        _validation(psnr, ssim, epochs, baseline)
        for ax in fig.axes:
            ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out)
        plt.close(fig)


def per_frame_plot(per_frame: pd.DataFrame, out: Path, baseline: str, title: str, moving: str,
                   long: bool = False) -> None:
    """PSNR of every frame of the rollout, over the whole frame and (below) over the pixels that
    move alone; one colour per predictor. `long` rollouts (hundreds of frames) get no markers."""
    predictors = [  # whole-frame column, moving-pixels column, label, colour, style, marker
        ("psnr", "psnr_moving", "model, mean of samples", "tab:blue", "-", "o"),
        ("psnr_best", "psnr_moving_best", "model, best sample", "tab:orange", "-", "^"),
        ("posterior_psnr", "posterior_psnr_moving", "posterior (sees the future)", "tab:green",
         ":", "v"),
        ("baseline_psnr", "baseline_psnr_moving", baseline, "black", "--", "s"),
    ]
    panels = [("whole frame", 0)]
    if any(p[1] in per_frame for p in predictors):
        panels.append((f"moving pixels only ({moving})", 1))
    with plt.rc_context({"font.size": 9, "axes.titlesize": 10, "legend.fontsize": 9}):
        fig, axes = plt.subplots(len(panels), 1, figsize=(FIGURE_WIDTH, 1 + 2.6 * len(panels)),
                                 dpi=DPI, sharex=True, squeeze=False)
        for ax, (panel, which) in zip(axes[:, 0], panels):
            for *columns, label, colour, style, marker in predictors:
                if columns[which] in per_frame:
                    ax.plot(per_frame["frame"], per_frame[columns[which]], color=colour, ls=style,
                            marker=None if long else marker, ms=4, lw=1 if long else 1.5,
                            label=label)
            ax.set(title=panel, ylabel="PSNR per image (dB)")
            ax.grid(alpha=0.3)
        axes[-1, 0].set_xlabel("frame index (from 0)")
        fig.suptitle(title)
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=2, frameon=False)
        fig.tight_layout(rect=(0, 0.09 if len(panels) > 1 else 0.14, 1, 1))
        fig.savefig(out)
        plt.close(fig)


def framed_tile(frame: np.ndarray, border, scale: int = SCALE) -> Image.Image:
    """(C, H, W) uint8 -> an upscaled RGB tile with a coloured border."""
    image = Image.fromarray(frame.transpose(1, 2, 0)).resize(
        (frame.shape[2] * scale, frame.shape[1] * scale), Image.NEAREST)
    framed = Image.new("RGB", (image.width + 4, image.height + 4), border)
    framed.paste(image, (2, 2))
    return framed


@lru_cache(maxsize=None)
def font(size: int = TEXT_SIZE, bold: bool = False) -> ImageFont.FreeTypeFont:
    """DejaVu Sans, the TrueType font matplotlib ships: the same on every machine."""
    properties = font_manager.FontProperties(family="DejaVu Sans",
                                             weight="bold" if bold else "normal")
    return ImageFont.truetype(font_manager.findfont(properties, fallback_to_default=False), size)


@dataclass(frozen=True)
class Sheet:
    """What is written above a GIF frame or a grid of tiles."""
    title: str
    key: list[tuple[tuple, str]]  # (border colour, what it means)
    notes: list[str]  # lines under the key
    headers: list[str]  # one per column of tiles; "\n" breaks a line
    corner: str = ""  # the header of the row labels' strip


LINE = TEXT_SIZE + 5  # px between lines of text
MEASURE = ImageDraw.Draw(Image.new("RGB", (1, 1)))  # measures text


def _heading_height(sheet: Sheet) -> int:
    return 6 + LINE + 4 + LINE * (1 + len(sheet.notes)) + 4


def _heading_width(sheet: Sheet) -> int:
    key = sum(MEASURE.textlength(text, font=font()) + 34 for _, text in sheet.key)
    lines = [MEASURE.textlength(sheet.title, font=font(TEXT_SIZE + 2, bold=True)), key,
             *(MEASURE.textlength(note, font=font()) for note in sheet.notes)]
    return int(max(lines)) + 12


def _write_heading(draw: ImageDraw.ImageDraw, sheet: Sheet) -> None:
    """The title, the colour key (a swatch framed as the tiles are, then its meaning), notes."""
    draw.text((6, 6), sheet.title, fill="black", font=font(TEXT_SIZE + 2, bold=True))
    x, y = 6, 6 + LINE + 4
    for colour, text in sheet.key:
        draw.rectangle((x, y + 1, x + 15, y + 15), outline=colour, width=3)
        draw.text((x + 21, y), text, fill="black", font=font())
        x += 34 + draw.textlength(text, font=font())
    for k, note in enumerate(sheet.notes):
        draw.text((6, y + LINE * (k + 1)), note, fill="black", font=font())


def draw_sheet(sheet: Sheet, rows: list[tuple[str, list[Image.Image]]]) -> Image.Image:
    """The heading and the column headers, then one row of tiles per (label, tiles), the
    labels ("" for none) in a strip on the left. No gaps: the tiles' borders part them."""
    labels = [sheet.corner, *(label for label, _ in rows)]
    strip = int(max(MEASURE.textlength(text, font=font()) for text in labels))
    strip += 4 if strip else 0
    tile_w, tile_h = rows[0][1][0].size
    header_lines = max(header.count("\n") + 1 for header in sheet.headers)
    top = _heading_height(sheet) + LINE * header_lines
    width = max(strip + len(sheet.headers) * tile_w, _heading_width(sheet))
    canvas = Image.new("RGB", (width, top + len(rows) * tile_h), "white")
    draw = ImageDraw.Draw(canvas)
    _write_heading(draw, sheet)
    if sheet.corner:
        draw.text((strip - 2, top - 4), sheet.corner, fill="black", font=font(), anchor="rd")
    for column, header in enumerate(sheet.headers):
        draw.multiline_text((strip + column * tile_w + 2, top - LINE * header_lines), header,
                            fill="black", font=font(), spacing=5)
    for row, (label, tiles) in enumerate(rows):
        y = top + row * tile_h
        if label:
            draw.text((strip - 2, y + tile_h // 2), label, fill="black", font=font(), anchor="rm")
        for column, tile in enumerate(tiles):
            canvas.paste(tile, (strip + column * tile_w, y))
    return canvas
