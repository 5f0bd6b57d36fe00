"""The dance track: sim-dance rendering and labels, the course's folders, the model's rollouts,
the long-rollout evaluation, the submission CSV, and every stage on a tiny sample."""
import dataclasses
import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cvae.config import DanceModelConfig
from cvae.tracks.dance.evaluation import evaluate_dance
from cvae.tracks.dance.rollout import generate, rollout
from cvae.data import lab4_folders, sim_dance
from cvae.data.shards import Split
from cvae.samples import to_uint8
from cvae.metrics import psnr
from cvae.tracks.dance.model import LOOKUP_POOL, DanceCVAE, _fill
from cvae.tracks.dance.submission import read_submission, write_submission
from tests.test_pipeline import _run, _write_params, assert_deps_are_the_code_run

TINY = DanceModelConfig(F_dim=8, L_dim=4, N_dim=2, D_out_dim=8)
# The model's variants: ours (first frame, appearance code, composite), on 2x2 patches, with an
# added change instead of the composite, the course's inputs (previous frame, label, z), with
# the label-guided look-up, and over a background plate
ADDED = dataclasses.replace(TINY, composite=False)
LOOKUP = dataclasses.replace(TINY, patch=2, first_lookup_dim=4)
PLATE = dataclasses.replace(TINY, patch=2, plate=True)
VARIANTS = [TINY, dataclasses.replace(TINY, patch=2), ADDED,
            dataclasses.replace(ADDED, sees_first=False, appearance_dim=0), LOOKUP, PLATE]


# --- sim-dance --------------------------------------------------------------------------------

def test_a_sequence_is_a_function_of_its_seed():
    a, b = sim_dance.generate_sequence(7, 6), sim_dance.generate_sequence(7, 6)
    other = sim_dance.generate_sequence(8, 6)
    assert a["frames"].shape == a["labels"].shape == (6, 32, 64, 3)
    assert a["frames"].dtype == np.uint8
    assert np.array_equal(a["frames"], b["frames"]) and np.array_equal(a["labels"], b["labels"])
    assert not np.array_equal(a["labels"], other["labels"])
    assert not np.array_equal(a["labels"][0], a["labels"][-1])  # the dancer moves


def test_the_label_is_the_skeleton_of_the_rendered_pose():
    rng = np.random.default_rng(3)
    pose = sim_dance.choreography(rng, 1)[0]
    look = sim_dance.random_look(rng)
    stage = sim_dance.Stage()
    stage.dress(look)
    stage.pose(pose)
    frame = stage.photograph(look)
    pixels = sim_dance.project(stage.keypoints(), *stage.camera(look))
    label = sim_dance.draw_label(pixels)
    inside = {name: xy for name, xy in pixels.items()
              if 0 <= xy[0] < sim_dance.WIDTH and 0 <= xy[1] < sim_dance.HEIGHT}
    assert len(inside) >= 12
    for name, (x, y) in inside.items():
        # The skeleton passes through every keypoint ...
        patch = label[max(int(y) - 1, 0): int(y) + 2, max(int(x) - 1, 0): int(x) + 2]
        assert patch.any(), f"nothing drawn at {name}"
    for name in ("pelvis", "chest", "neck"):
        # ... and the renderer drew the body where the keypoints project (same camera).
        x, y = pixels[name].astype(int)
        assert not np.array_equal(frame[y, x], look.background), f"no body at {name}"
    # Only the bones' fixed colours are drawn, most bones visible in their own.
    drawn = {tuple(int(v) for v in c) for c in label.reshape(-1, 3)} - {(0, 0, 0)}
    palette = {colour for _, _, colour in sim_dance.BONES}
    assert drawn <= palette and len(drawn) >= 10
    moved = stage.keypoints()
    moved = {k: v + np.array([0.3, 0, 0]) for k, v in moved.items()}
    assert not np.array_equal(sim_dance.draw_label(sim_dance.project(moved, *stage.camera(look))),
                              label)


def test_a_clip_interpolates_between_keyframes():
    clip = sim_dance.load_clip("dance_a")
    k = 5
    halfway = clip.pose_at((clip.times[k] + clip.times[k + 1]) / 2)
    a, b = clip.keyframes[k], clip.keyframes[k + 1]
    np.testing.assert_allclose(halfway.root_position,
                               (np.array(a.root_position) + b.root_position) / 2, atol=1e-9)
    at_key = clip.pose_at(clip.times[k])
    np.testing.assert_allclose(np.concatenate([at_key.root_orientation, *at_key.joints]),
                               np.concatenate([a.root_orientation, *a.joints]), atol=1e-9)
    q = np.array(halfway.joints[0])
    assert abs(np.linalg.norm(q) - 1) < 1e-9


# --- the course's folders -----------------------------------------------------------------------

def _layout(root, train=6, val=4, test_frames=(4, 4), size=(64, 32)):
    rng = np.random.default_rng(0)

    def images(folder, count):
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(count):
            Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(
                folder / f"frame{n}.png")

    for split, count in (("train", train), ("val", val)):
        images(root / split / f"{split}_img", count)
        images(root / split / f"{split}_label", count)
    for i, frames in enumerate(test_frames):
        images(root / "test" / "test_img" / str(i), frames)
        images(root / "test" / "test_label" / str(i), test_frames[0])


def test_the_folders_are_read_in_numeric_order_and_cut_into_sequences(tmp_path):
    _layout(tmp_path, train=7, test_frames=(1, 1))  # the course's test: first frames only
    sequences = list(lab4_folders.read_sequences(tmp_path, train_vi_len=3, val_vi_len=4))
    counts = {s: sum(1 for split, *_ in sequences if split == s) for s in ("train", "val", "test")}
    assert counts == {"train": 2, "val": 1, "test": 2}  # 7 train frames: two clips of 3
    _, frames, labels = sequences[1]
    tenth = np.asarray(Image.open(tmp_path / "train" / "train_img" / "frame3.png"))
    assert np.array_equal(frames[0], tenth)  # frame3 starts the second clip, not frame10-ish
    test = [s for s in sequences if s[0] == "test"]
    assert test[0][1].shape[0] == 1 and test[0][2].shape[0] == 1
    files = lab4_folders.numbered([tmp_path / "10.png", tmp_path / "2.png", tmp_path / "1.png"])
    assert [f.name for f in files] == ["1.png", "2.png", "10.png"]


@pytest.mark.parametrize("damage, message", [
    (lambda r: __import__("shutil").rmtree(r / "val" / "val_label"), "val_label is missing"),
    (lambda r: (r / "train" / "train_label" / "frame0.png").unlink(), "6 images but 5 labels"),
    (lambda r: Image.new("RGB", (64, 64)).save(r / "val" / "val_img" / "frame2.png"),
     "frame2.png: 64 x 64 pixels (W x H), expected 64 x 32"),
    (lambda r: (r / "test" / "test_img" / "1" / "frame3.png").unlink(),
     "3 images for 4 labels"),
])
def test_a_broken_layout_is_named(tmp_path, damage, message):
    _layout(tmp_path)
    damage(tmp_path)
    with pytest.raises((FileNotFoundError, ValueError), match=re.escape(message)):
        list(lab4_folders.read_sequences(tmp_path, train_vi_len=3, val_vi_len=4))


# --- the model ----------------------------------------------------------------------------------

def _batch(T=5, B=2):
    torch.manual_seed(1)
    return torch.rand(T, B, 3, 32, 64), torch.rand(T, B, 3, 32, 64)


@pytest.mark.parametrize("cfg", VARIANTS)
def test_teacher_forced_batches_equal_the_step_by_step_rollout(cfg):
    model = DanceCVAE(cfg).eval()
    frames, labels = _batch()
    torch.manual_seed(2)
    out = rollout(model, frames, labels, teacher_forcing=True)
    torch.manual_seed(2)
    z = torch.randn(4, *out.mu.shape[1:]).view(4, 2, *model.latent_shape)
    mu, logvar = out.mu.view_as(z), out.logvar.view_as(z)
    context = model.context(frames[0], model.frame_encoder(frames[0]),
                            model.label_encoder(labels[0]))
    for t in range(1, 5):
        step = model.predict(context, model.frame_encoder(frames[t - 1]),
                             model.label_encoder(labels[t]),
                             mu[t - 1] + torch.exp(0.5 * logvar[t - 1]) * z[t - 1])
        torch.testing.assert_close(out.frames[t - 1], step, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cfg", VARIANTS)
def test_an_untrained_residual_model_copies_the_first_frame(cfg):
    model = DanceCVAE(cfg).eval()
    frames, labels = _batch()
    with torch.no_grad():
        preds = generate(model, frames[0], labels, lambda t, fed, f: torch.randn(2, *model.latent_shape))
    if cfg.composite:  # the mask starts at sigmoid(MASK_START), not 0: the first frame, almost
        # (the plate's own mask also starts at sigmoid(MASK_START))
        torch.testing.assert_close(preds, frames[0].expand_as(preds),
                                   atol=0.008 if cfg.plate else 0.004, rtol=0)
    else:
        assert torch.equal(preds, frames[0].expand_as(preds))
    course = DanceCVAE(DanceModelConfig(F_dim=8, L_dim=4, N_dim=2, D_out_dim=8, residual=False))
    with torch.no_grad():
        out = generate(course.eval(), frames[0], labels, lambda t, fed, f: torch.zeros(2, 2, 32, 64))
    assert not torch.equal(out, frames[0].expand_as(out))


def test_the_composite_mask_picks_the_painting_over_the_first_frame():
    model = DanceCVAE(TINY).eval()
    to_rgb = model.generator[2]  # zero weights: its biases alone say what is painted and where
    frames, labels = _batch()
    with torch.no_grad():
        to_rgb.bias[3] = 20.0  # the mask's logit: the painting everywhere
        preds = generate(model, frames[0], labels, lambda t, fed, f: torch.zeros(2, *model.latent_shape))
    torch.testing.assert_close(preds, torch.full_like(preds, 0.5))  # sigmoid(0), not the first


def test_the_plate_fills_the_masked_dancer_from_the_background_around_it():
    background, costume = torch.tensor([0.2, 0.5, 0.3]), torch.tensor([0.9, 0.1, 0.6])
    image = background[:, None, None].expand(3, 32, 64).clone()
    image[:, 10:20, 30:34] = costume[:, None, None]  # a torso of 10 x 4 pixels
    mask = torch.zeros(1, 32, 64)
    mask[:, 9:21, 29:35] = 1  # covers it, with a pixel of background to spare
    plate = _fill(image[None], mask[None])[0]
    torch.testing.assert_close(plate, background[:, None, None].expand_as(plate))
    half = _fill(image[None], 0.5 * mask[None])[0][:, 15, 31]  # half-covered: in between
    assert ((half - costume).abs() > 0.1).all() and ((half - background).abs() > 0.1).all()


def test_the_plate_is_what_the_composite_keeps_and_trains_through_it():
    """With `plate`, a step's composite keeps the sequence's background plate where its mask is
    0, not the first frame; the plate's mask, found once per sequence, learns from every
    step's loss."""
    model = DanceCVAE(PLATE)
    frames, labels = _batch()
    with torch.no_grad():
        model.plate_mask[2].bias.fill_(20.0)  # the dancer everywhere: every pixel filled
        context = model.context(frames[0], model.frame_encoder(frames[0]),
                                model.label_encoder(labels[0]))
    expected = _fill(frames[0], torch.ones(2, 1, 32, 64))
    torch.testing.assert_close(context.base, expected)
    assert (context.base - frames[0]).abs().amax() > 0.1
    model.plate_mask[2].bias.data.fill_(-2.0)  # between: a gradient to follow
    out = rollout(model, frames, labels, teacher_forcing=False).frames
    ((out - frames[1:]) ** 2).mean().backward()
    assert model.plate_mask[2].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="model.dance.plate"):
        dataclasses.replace(PLATE, composite=False).check()


@pytest.mark.parametrize("cfg", VARIANTS)
def test_the_autoregressive_rollout_feeds_its_predictions_and_trains(cfg):
    model = DanceCVAE(cfg)
    frames, labels = _batch()
    out = rollout(model, frames, labels, teacher_forcing=False)
    assert out.frames.shape == (4, 2, 3, 32, 64)
    assert out.mu.shape == (4, 2, model.latent_size)
    assert model.latent_shape == (2, 32 // cfg.patch, 64 // cfg.patch)
    loss = ((out.frames - frames[1:]) ** 2).mean()
    loss.backward()
    assert all(p.grad is not None for p in model.frame_encoder.parameters())
    with pytest.raises(ValueError, match="n_past must be 1"):
        rollout(model, frames, labels, 2, teacher_forcing=True)


def _change_from_the_first(cfg, what: str = "frame") -> torch.Tensor:
    """Where (columns, (64,) bool) a prediction from the same previous frame, label and z
    changes when only the left 8 columns of the first frame (`what="frame"`) or of the first
    label (`"label"`) differ (without the residual, through which the first frame reaches the
    output directly)."""
    torch.manual_seed(3)
    model = DanceCVAE(dataclasses.replace(cfg, residual=False)).eval()
    frames, labels = _batch()
    z = torch.zeros(2, *model.latent_shape)

    def predict(first, first_label):
        context = model.context(first, model.frame_encoder(first),
                                model.label_encoder(first_label))
        return model.predict(context, model.frame_encoder(frames[1]),
                             model.label_encoder(labels[2]), z)

    other = (frames if what == "frame" else labels)[0].clone()
    other[..., :8] = 0.5
    with torch.no_grad():
        a = predict(frames[0], labels[0])
        b = predict(other, labels[0]) if what == "frame" else predict(frames[0], other)
    return (a - b).abs().amax(dim=(0, 1, 2)) > 1e-6


def test_the_fusion_sees_the_first_frame_and_its_appearance_only_when_asked():
    """The course's inputs cannot tell where the first frame's dancer stood (what the residual
    must erase); `sees_first` can, near where it changed; the appearance code, everywhere."""
    small = dict(F_dim=8, L_dim=4, N_dim=2, D_out_dim=8)
    course = _change_from_the_first(DanceModelConfig(**small, sees_first=False,
                                                     appearance_dim=0))
    assert not course.any()
    first = _change_from_the_first(DanceModelConfig(**small, appearance_dim=0))
    assert first[:8].all() and not first[40:].any()  # convolutions reach a few pixels
    code = _change_from_the_first(DanceModelConfig(**small, sees_first=False))
    assert code.all()
    appearance = DanceCVAE(DanceModelConfig(**small)).appearance
    out = appearance(torch.rand(2, 12, 32, 64))
    assert out.shape == (2, 16, 32, 64)
    assert torch.equal(out, out[..., :1, :1].expand_as(out))  # one code for every pixel
    lookup = _change_from_the_first(DanceModelConfig(**small, sees_first=False,
                                                     appearance_dim=0, first_lookup_dim=4))
    assert lookup.all()


def test_the_look_up_reads_the_first_frame_where_the_first_label_drew_the_same_bone():
    """Label features as one-hot bone codes: a position of label t showing bone k reads the first
    frame's features and pixels (averaged over LOOKUP_POOL x LOOKUP_POOL positions) where the
    first label shows bone k; where label t shows no bone (features 0), their average over the
    whole first frame."""
    model = DanceCVAE(DanceModelConfig(F_dim=8, L_dim=4, N_dim=2, D_out_dim=8,
                                       first_lookup_dim=4))
    for projection in (model.lookup_query, model.lookup_key):
        projection.weight.data = 40 * torch.eye(4)[:, :, None, None]  # a sharp match
        projection.bias.data.zero_()
    first_label, label = torch.zeros(2, 1, 4, 32, 64)
    first_label[0, 0, 3, 5], first_label[0, 1, 20, 60] = 1, 1  # bones 0 and 1 in the first pose
    label[0, 0, 30, 2], label[0, 1, 0, 0] = 1, 1  # ... and where they are now
    first, first_features = torch.rand(1, 3, 32, 64), torch.randn(1, 8, 32, 64)
    with torch.no_grad():
        context = model.context(first, first_features, first_label)
        read = model.look_up(label, context.keys, context.values)
    assert read.shape == (1, 8 + 3, 32, 64)
    cells = F.avg_pool2d(torch.cat([first_features, first], 1), LOOKUP_POOL)
    torch.testing.assert_close(read[0, :, 30, 2], cells[0, :, 3 // LOOKUP_POOL, 5 // LOOKUP_POOL])
    torch.testing.assert_close(read[0, :, 0, 0], cells[0, :, 20 // LOOKUP_POOL, 60 // LOOKUP_POOL])
    torch.testing.assert_close(read[0, :, 10, 10], cells[0].mean((1, 2)), atol=0.01, rtol=0)


# --- evaluation and submission ------------------------------------------------------------------

def test_the_rollout_protocol_scores_every_frame_beside_copying_the_first(dance_shards):
    shards, seqs = dance_shards
    model = DanceCVAE(ADDED)
    split = Split(shards, "test")
    scores, predictions = evaluate_dance(model, split, batch_size=1, device=torch.device("cpu"),
                                         seed=0, samples=3, keep=2)
    assert scores.scores["psnr"].shape == (2, 5)  # 2 sequences, frames 1..5
    truth = torch.from_numpy(np.stack([s[0] for s in seqs[3:]])).permute(0, 1, 4, 2, 3) / 255
    expected = psnr(truth[:, :1].expand(-1, 5, -1, -1, -1), truth[:, 1:]).numpy()
    np.testing.assert_allclose(scores.scores["baseline_psnr"], expected, rtol=1e-5)
    # Untrained, the residual model copies the first frame: exactly the baseline.
    np.testing.assert_allclose(scores.scores["psnr"], expected, rtol=1e-5)
    assert (scores.scores["psnr_best"] >= scores.scores["psnr"] - 1e-4).all()
    assert predictions.shape == (2, 6, 3, 32, 64) and predictions.dtype == np.uint8
    assert np.array_equal(predictions[:, 0], truth[:, 0].mul(255).round().byte().numpy())
    again, _ = evaluate_dance(model, split, batch_size=2, device=torch.device("cpu"), seed=0,
                              samples=3)
    np.testing.assert_allclose(again.scores["posterior_psnr"], scores.scores["posterior_psnr"],
                               rtol=1e-5)  # the same draws however sequences are batched


def test_a_submission_reads_back_the_same_pixels(tmp_path):
    x = torch.rand(2, 4, 3, 32, 64)
    predictions = to_uint8(x).numpy()
    path = tmp_path / "submission.csv"
    assert write_submission(path, predictions) == 8
    header = path.read_text().split("\n", 1)[0].split(",")
    assert header[:3] == ["id", "0", "1"] and len(header) == 1 + 6144
    back = read_submission(path, expected_rows=8)
    assert np.array_equal(back, predictions.reshape(8, 3, 32, 64))
    assert np.abs(back / 255 - x.reshape(8, 3, 32, 64).numpy()).max() <= 0.5 / 255 + 1e-7
    with pytest.raises(ValueError, match="8 rows, expected 10"):
        read_submission(path, expected_rows=10)
    path.write_text(path.read_text().replace("id,", "index,", 1))
    with pytest.raises(ValueError, match="expected `id`"):
        read_submission(path)


# --- every stage --------------------------------------------------------------------------------

def test_the_dance_track_runs_every_stage(tmp_path):
    _write_params(tmp_path, {
        "data": {"source": "sim-dance", "num_train": 6, "num_val": 1, "num_test": 2, "workers": 2,
                 "dance": {"train_vi_len": 6, "val_vi_len": 12}},
        "model": {"dance": {"F_dim": 8, "L_dim": 4, "N_dim": 2, "D_out_dim": 8}},
        "train": {"n_past": 1, "n_future": 5, "epochs": 2, "steps_per_epoch": 2, "batch_size": 3,
                  "log_every": 1},
        "eval": {"batch_size": 2, "keep": 2, "num_samples": 2},
    })
    for stage in ("download", "prepare", "train", "evaluate", "report"):
        result = _run(stage, tmp_path)
        assert result.returncode == 0, f"{stage} failed:\n{result.stderr[-3000:]}"
    meta = json.loads((tmp_path / "shards" / "meta.json").read_text())
    assert meta["track"] == "dance" and meta["frame_lengths"] == {"train": 6, "val": 12, "test": 12}
    metrics = json.loads((tmp_path / "metrics" / "eval.json").read_text())
    assert metrics["scored_split"] == "test" and metrics["n_future"] == 11
    assert 0 < metrics["psnr"] < 100 and metrics["submission_rows"] == 2 * 12
    assert read_submission(tmp_path / "eval" / "submission.csv", 24).shape == (24, 3, 32, 64)
    check = _run("check_submission", tmp_path)
    assert check.returncode == 0 and "24 frames of 3 x 32 x 64" in check.stdout
    (tmp_path / "eval" / "submission.csv").write_text("id,0\n0,1\n")
    check = _run("check_submission", tmp_path)
    assert check.returncode != 0 and "not a valid submission" in check.stderr
    assert len((tmp_path / "logs" / "eval" / "per_frame.tsv").read_text().splitlines()) == 1 + 11
    gifs = sorted((tmp_path / "reports" / "gifs").glob("*.gif"))
    assert [g.name for g in gifs] == ["sequence-0.gif", "sequence-1.gif"]
    assert Image.open(gifs[0]).n_frames == 12
    summary = (tmp_path / "reports" / "summary.md").read_text()
    assert f"{metrics['psnr']:.2f}" in summary and f"{metrics['baseline_psnr']:.2f}" in summary
    assert_deps_are_the_code_run(tmp_path, ["download", "prepare", "train", "evaluate", "report"],
                                 other_tracks=["robot"])


def _dancer_moves_away(frames: int = 4):
    """A plain background, a 10 x 6 'dancer' at x 5..10 in frame 0 and at x 40..45 later."""
    background, dancer = np.array([0.2, 0.3, 0.4]), np.array([0.9, 0.1, 0.1])
    truth = np.broadcast_to(background[None, :, None, None], (frames, 3, 32, 64)).copy()
    truth[0, :, 10:20, 5:11] = dancer[:, None, None]
    truth[1:, :, 10:20, 40:46] = dancer[:, None, None]
    return truth


def test_the_ghost_region_is_where_the_first_frames_dancer_was_and_is_no_longer():
    from cvae.tracks.dance.ghost import ghost_region_psnr
    truth = _dancer_moves_away()
    copy = np.broadcast_to(truth[:1], truth.shape)
    erased = truth.copy()
    erased[1:, :, 10:20, 5:11] += 0.01  # background there, 0.01 off: 40 dB exactly
    ghost_of_copy = 10 * np.log10(3 / (0.7 ** 2 + 0.2 ** 2 + 0.3 ** 2))
    assert ghost_region_psnr(truth, erased) == pytest.approx(
        {"psnr": 40.0, "copy_psnr": ghost_of_copy, "pixels_per_frame": 60.0})
    assert ghost_region_psnr(truth, copy)["psnr"] == pytest.approx(ghost_of_copy)
    half = truth.copy()
    half[1:, :, 10:20, 5:11] = (truth[0, :, 10:20, 5:11] + truth[1, :, 10:20, 5:11]) / 2
    assert ghost_region_psnr(truth, half)["psnr"] == pytest.approx(ghost_of_copy + 20 * np.log10(2))
    # The new dancer's pixels are not the ghost's: a prediction wrong only there scores 40.
    wrong_elsewhere = erased.copy()
    wrong_elsewhere[1:, :, 10:20, 40:46] = 0.0
    assert ghost_region_psnr(truth, wrong_elsewhere)["psnr"] == pytest.approx(40.0)


def test_the_ghost_tool_reads_saved_samples_and_refuses_a_sequence_without_a_ghost_region(tmp_path):
    from cvae.tracks.dance.ghost import ghost_region_psnr
    truth = _dancer_moves_away()
    with pytest.raises(ValueError, match="no pixel where the first frame's dancer was"):
        ghost_region_psnr(truth[[0, 0]], truth[[0, 0]])
    u8 = np.rint(np.stack([truth, truth]) * 255).astype(np.uint8)
    np.savez_compressed(tmp_path / "samples.npz", truth=u8, prediction=u8[:, [0, 0, 0, 0]],
                        labels=u8, n_past=1)
    result = _run("ghost", tmp_path, "samples.npz")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.count("sequence ") == 2 and "mean over 2:" in out
    first = float(out.split("ghost region ")[1].split(" dB")[0])
    assert first == pytest.approx(float(out.split("copying the first frame ")[1].split(" dB")[0]))
