"""Periodic actions: eval.every=0 and checkpoint.every=0 mean "only at the last step"."""

from draw_megatron.train.trainer import is_due


def test_every_n_steps_and_the_last():
    assert [s for s in range(1, 11) if is_due(s, 4, 10)] == [4, 8, 10]


def test_zero_means_only_the_last_step():
    assert [s for s in range(1, 11) if is_due(s, 0, 10)] == [10]
