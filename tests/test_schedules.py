import pytest

from cvae.config import KLConfig, TeacherForcingConfig, TrainConfig
from cvae.schedules import kl_beta, learning_rate, teacher_forcing_ratio


def test_monotonic_ramps_once_then_stays():
    cfg = KLConfig(type="Monotonic", beta_max=1.0, cycle=10, ratio=0.5)
    assert kl_beta(cfg, 0) == 0
    assert kl_beta(cfg, 1) == pytest.approx(0.2)  # 5 epochs of ramp: 0, .2, .4, .6, .8
    assert kl_beta(cfg, 4) == pytest.approx(0.8)
    assert kl_beta(cfg, 5) == 1.0
    assert kl_beta(cfg, 10) == 1.0  # no restart at the cycle boundary
    assert kl_beta(cfg, 1000) == 1.0


def test_cyclical_restarts_at_every_cycle_boundary():
    cfg = KLConfig(type="Cyclical", beta_max=2.0, cycle=4, ratio=0.5)
    assert [kl_beta(cfg, t) for t in range(9)] == pytest.approx(
        [0, 1, 2, 2, 0, 1, 2, 2, 0])


def test_cyclical_with_full_ratio_is_a_sawtooth():
    cfg = KLConfig(type="Cyclical", beta_max=1.0, cycle=4, ratio=1.0)
    assert [kl_beta(cfg, t) for t in range(5)] == pytest.approx([0, 0.25, 0.5, 0.75, 0])


def test_none_is_constant():
    cfg = KLConfig(type="None", beta_max=0.3)
    assert {kl_beta(cfg, t) for t in (0, 1, 17, 10_000)} == {0.3}


def test_teacher_forcing_holds_then_decays_to_its_bound():
    cfg = TeacherForcingConfig(start=1.0, start_decay_epoch=3, decay_step=0.25, lower_bound=0.2)
    ratios = [teacher_forcing_ratio(cfg, e) for e in range(8)]
    # Epochs 0..2 at start; epoch 3 is the first lowered; then -0.25 an epoch, floored at 0.2.
    assert ratios == pytest.approx([1.0, 1.0, 1.0, 0.75, 0.5, 0.25, 0.2, 0.2])


def test_teacher_forcing_without_decay_is_constant():
    cfg = TeacherForcingConfig(start=0.5, decay_step=0.0, lower_bound=0.0)
    assert teacher_forcing_ratio(cfg, 100) == 0.5


def test_cosine_learning_rate_falls_from_lr_through_half_to_near_zero():
    cfg = TrainConfig(lr=0.004, lr_schedule="cosine", epochs=5, steps_per_epoch=20)  # 100 steps
    rates = [learning_rate(cfg, step) for step in range(100)]
    assert rates[0] == 0.004
    assert rates[50] == pytest.approx(0.002)
    assert rates[25] == pytest.approx(0.002 * (1 + 0.5 ** 0.5))  # cos(pi/4)
    assert 0 < rates[99] < 0.004 * 1e-3  # the last step is small, but still a step
    assert all(a > b for a, b in zip(rates, rates[1:]))


def test_constant_learning_rate_ignores_the_clock():
    cfg = TrainConfig(lr=0.003, epochs=5, steps_per_epoch=20)
    assert {learning_rate(cfg, step) for step in (0, 50, 99, 10_000)} == {0.003}
