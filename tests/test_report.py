"""Both tracks' reports on made-up inputs: the figures' sizes (two revisions side by side fit in
1400 px), the GIFs, and what summary.md says of the final KL."""
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cvae.figures import COLLAPSED_BELOW, ReportInputs, font, per_frame_plot
from cvae.tracks.dance import report as dance_report
from cvae.tracks.robot import report as robot_report

COLLAPSED = {"epochs": 3, "steps": 60, "best_val_psnr": 24.0, "best_epoch": 2, "device": "cpu",
             "processes": 1, "final_kl": 0.033, "final_kl_per_step": 0.003}
INFORMATIVE = {**COLLAPSED, "final_kl": 11.9, "final_kl_per_step": 1.08}
WIDEST = 680  # px: two revisions side by side, with the plots page's margins, in 1400 px
PSNR_COLUMNS = ["psnr", "psnr_best", "posterior_psnr", "baseline_psnr", "psnr_moving",
                "psnr_moving_best", "posterior_psnr_moving", "baseline_psnr_moving"]


def _logs(rng, steps=60, epochs=3):
    step = np.arange(1, steps + 1)
    return (pd.DataFrame({"step": step, "epoch": (step - 1) * epochs // steps,
                          "loss": 0.5 / step ** 0.5, "mse": 0.5 / step ** 0.5,
                          "kl": 5 * np.exp(-step / 10) + rng.uniform(0.01, 0.02, steps),
                          "beta": np.minimum(step / 30, 1) * 1e-4, "tfr": np.linspace(1, 0, steps),
                          "teacher_forced": 1, "sec_per_step": 0.5}),
            pd.DataFrame({"epoch": range(epochs), "step": range(20, 20 * epochs + 1, 20),
                          "val_psnr": [20, 22, 24], "val_ssim": [0.7, 0.75, 0.8],
                          "val_baseline_psnr": 21.0}))


def _per_frame(rng, frames):
    return pd.DataFrame({"frame": frames, **{c: rng.uniform(12, 28, len(frames))
                                             for c in PSNR_COLUMNS}})


def _metrics(**extra):
    return {**{c: 20.0 for c in PSNR_COLUMNS}, "ssim": 0.8, "ssim_best": 0.81,
            "posterior_ssim": 0.82, "baseline_ssim": 0.7, "sequences": 2, "num_samples": 3,
            "best_by": "ssim", "moving_threshold": 0.1, **extra}


def _frames(rng, *shape):
    return rng.integers(0, 256, shape, dtype=np.uint8)


def _check_sizes(out, gif_frames):
    for path in [*out.glob("*.png"), *out.glob("*.gif"), *out.glob("gifs/*.gif")]:
        assert Image.open(path).width <= WIDEST, path.name
    assert Image.open(out / "training_curves.png").height <= 800
    assert Image.open(out / "prediction.gif").n_frames == gif_frames
    assert [p.name for p in sorted((out / "gifs").iterdir())] == ["sequence-0.gif",
                                                                  "sequence-1.gif"]


def test_the_robot_report_fits_two_revisions_in_1400_px(tmp_path):
    rng = np.random.default_rng(0)
    steps, epochs = _logs(rng)
    saved = {"n_past": np.array(2), "truth": _frames(rng, 2, 12, 3, 64, 64),
             "best": _frames(rng, 2, 10, 3, 64, 64), "samples": _frames(rng, 2, 2, 10, 3, 64, 64),
             "posterior": _frames(rng, 2, 10, 3, 64, 64)}
    metrics = _metrics(n_past=2, n_future=10, model="SVG-FP, concat", psnr_finn=20.1)
    inputs = ReportInputs(steps, epochs, _per_frame(rng, range(2, 12)), saved, metrics, COLLAPSED)
    robot_report.write_report(inputs, sequence=1, fps=4, out=tmp_path)
    _check_sizes(tmp_path, gif_frames=12)
    grid = Image.open(tmp_path / "prediction_grid.png")
    assert grid.height > 12 * (2 * 64)  # one row per time step, each frame shown twice its size
    assert font().path.endswith("DejaVuSans.ttf")  # the labels' TrueType font, not a bitmap
    summary = (tmp_path / "summary.md").read_text()
    assert "| copy last frame | 20.00 | 20.00 | – | 0.7000 | – |" in summary  # moving pixels
    for figure in ("training_curves.png", "per_frame_psnr.png", "prediction_grid.png",
                   "prediction.gif"):
        assert f"]({figure})" in summary


def test_the_dance_report_fits_two_revisions_in_1400_px(tmp_path):
    rng = np.random.default_rng(0)
    steps, epochs = _logs(rng)
    saved = {"truth": _frames(rng, 2, 40, 3, 32, 64), "labels": _frames(rng, 2, 40, 3, 32, 64),
             "prediction": _frames(rng, 2, 40, 3, 32, 64)}
    metrics = _metrics(n_past=1, n_future=39, model="dance-cvae", scored_split="test",
                       submission_rows=80)
    inputs = ReportInputs(steps, epochs, _per_frame(rng, range(1, 40)), saved, metrics,
                          INFORMATIVE)
    dance_report.write_report(inputs, sequence=0, fps=10, out=tmp_path)
    _check_sizes(tmp_path, gif_frames=40)
    summary = (tmp_path / "summary.md").read_text()
    assert "| copy the first frame | 20.00 | 20.00 | 0.7000 |" in summary


@pytest.mark.parametrize("summary", [
    lambda train: robot_report.summary_markdown(
        _metrics(n_past=2, n_future=10, model="SVG-FP"), train, 0),
    lambda train: dance_report.summary_markdown(
        _metrics(n_past=1, n_future=39, model="dance-cvae", scored_split="test",
                 submission_rows=80), train, 0),
], ids=["robot", "dance"])
def test_the_summary_states_the_final_kl_and_whether_the_posterior_collapsed(summary):
    rule = f"collapsed when the final KL is below {COLLAPSED_BELOW} nats per step"
    collapsed, informative = summary(COLLAPSED), summary(INFORMATIVE)
    assert "0.033 nats per training sequence, 0.003 nats per step" in collapsed
    assert "11.9 nats per training sequence, 1.08 nats per step" in informative
    assert "The posterior has collapsed" in collapsed and rule in collapsed
    assert "The posterior has not collapsed" in informative and rule in informative
    assert "has not collapsed" not in collapsed and "has collapsed**" not in informative


def test_the_per_frame_plot_draws_what_the_table_holds(tmp_path):
    """Columns may be absent (an older table, a run without the posterior): the plot has one
    panel then, the same width."""
    per_frame = pd.DataFrame({"frame": range(2, 12), "psnr": np.linspace(25, 20, 10),
                              "baseline_psnr": np.linspace(24, 18, 10)})
    per_frame_plot(per_frame, tmp_path / "old.png", baseline="copy", title="t", moving="m")
    per_frame_plot(_per_frame(np.random.default_rng(0), range(2, 12)), tmp_path / "new.png",
                   baseline="copy", title="t", moving="m")
    old, new = Image.open(tmp_path / "old.png"), Image.open(tmp_path / "new.png")
    assert old.width == new.width <= WIDEST and old.height < new.height
