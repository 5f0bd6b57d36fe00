"""Running the dance model over a sequence: what it sees at every step.

Step t (t >= 1) predicts frame t from the features of frame t-1, those of label t and z_t. Frame
t-1 is the truth for t = 1 and under teacher forcing, else the model's own prediction. In
training z_t comes from the posterior on the true frame t and label t; at test time from the
prior, N(0, I) (or, as an upper reference, still from the posterior).

Nothing carries state from step to step but the fed frame (and the first frame: the residual
generator changes it, and its features, appearance code and look-up are the sequence's
context), so under teacher forcing every step is known up front and the whole clip runs as one
batch; only the autoregressive path loops.
"""
from __future__ import annotations

from typing import Callable

import torch

from cvae.tracks.dance.model import Context, DanceCVAE
from cvae.vae import Rollout, reparameterize


def rollout(model: DanceCVAE, frames: torch.Tensor, labels: torch.Tensor, n_past: int = 1, *,
            teacher_forcing: bool) -> Rollout:
    """Training rollout of frames (T, B, C, H, W) with labels (T, B, C, H, W): predictions of
    frames 1..T-1 and the posterior's statistics, flattened per step to (T-1, B, latent_size)
    so that `cvae.losses.sequence_loss` treats both tracks alike, with the prior's (zeros)."""
    if n_past != 1:
        raise ValueError("the dance model conditions on one frame: n_past must be 1")
    T, B = frames.shape[:2]
    frame_features = _batched(model.frame_encoder, frames)  # (T, B, F, H, W)
    all_label_features = _batched(model.label_encoder, labels)  # (T, B, L, H, W)
    label_features = all_label_features[1:]
    context = model.context(frames[0], frame_features[0], all_label_features[0])
    mu, logvar = (s.unflatten(0, (T - 1, B)) for s in model.posterior(
        frame_features[1:].flatten(0, 1), label_features.flatten(0, 1)))
    z = reparameterize(mu, logvar)
    if teacher_forcing:
        predictions = _batched_predict(model, context, frame_features[:-1], label_features, z)
    else:
        fed_features, outputs = frame_features[0], []
        for t in range(T - 1):
            outputs.append(model.predict(context, fed_features, label_features[t], z[t]))
            if t < T - 2:  # the last prediction feeds nothing
                fed_features = model.frame_encoder(outputs[-1])
        predictions = torch.stack(outputs)
    prior = torch.zeros_like(mu).flatten(2)  # N(0, I): mean and log-variance 0
    return Rollout(predictions, mu.flatten(2), logvar.flatten(2), prior, prior)


def generate(model: DanceCVAE, first: torch.Tensor, labels: torch.Tensor,
             latent: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """The test protocol: frames 1..T-1 (T-1, B, C, H, W) from the first frame (B, C, H, W) and
    every label (T, B, C, H, W), each prediction fed back. `latent(t, fed_features,
    label_features)` gives z_t (B, N_dim, H, W) from what step t is fed: a prior draw, or the
    posterior's on the true frame. One step at a time (labels are encoded as they are needed),
    so memory does not grow with the sequence."""
    fed_features, outputs = model.frame_encoder(first), []
    context = model.context(first, fed_features, model.label_encoder(labels[0]))
    for t in range(1, labels.shape[0]):
        label_features = model.label_encoder(labels[t])
        outputs.append(model.predict(context, fed_features, label_features,
                                     latent(t, fed_features, label_features)))
        if t < labels.shape[0] - 1:
            fed_features = model.frame_encoder(outputs[-1])
    return torch.stack(outputs)


def _batched(module, x: torch.Tensor) -> torch.Tensor:
    """Apply an image module to (T, B, ...) as one batch of T*B images."""
    return module(x.flatten(0, 1)).unflatten(0, x.shape[:2])


def _batched_predict(model: DanceCVAE, context: Context, *steps: torch.Tensor) -> torch.Tensor:
    """`model.predict` on the steps' inputs (T, B, ...) as one batch of T*B steps, the
    sequence's context (B, ...) the same at every step."""
    T, B = steps[0].shape[:2]

    def every_step(x):  # (B, ...) -> (T*B, ...), step-major as the steps are flattened
        return x.expand(T, *x.shape).flatten(0, 1)
    return model.predict(Context(*map(every_step, context)),
                         *(x.flatten(0, 1) for x in steps)).unflatten(0, (T, B))
