import json
import os

import pytest

from draw_megatron.train.checkpoint import MARKER, CheckpointManager, tag_for
from draw_megatron.train.metrics import MetricsLog, read_metrics


def test_metrics_keep_last_record_per_step_and_skip_a_truncated_line(tmp_path):
    log = MetricsLog(str(tmp_path), is_writer=True)
    for step in range(3):
        log.write({"kind": "train", "step": step, "loss": 10.0 - step})
    log.write({"kind": "train", "step": 2, "loss": 1.5})  # logged again after a resume
    log.write({"kind": "eval", "step": 2, "avg": 3.0})
    log.close()
    with open(tmp_path / "metrics.jsonl", "a") as fh:
        fh.write('{"kind": "train", "st')  # a crash mid-write
    recs = read_metrics(str(tmp_path / "metrics.jsonl"), kind="train")
    assert [(r["step"], r["loss"]) for r in recs] == [(0, 10.0), (1, 9.0), (2, 1.5)]
    assert len(read_metrics(str(tmp_path / "metrics.jsonl"))) == 4


def test_only_rank0_writes(tmp_path):
    MetricsLog(str(tmp_path / "r1"), is_writer=False).write({"kind": "train", "step": 0})
    assert not (tmp_path / "r1").exists()


class _FakeEngine:
    """Writes what DeepSpeed would, minus the tensors."""

    def save_checkpoint(self, root, tag, client_state, save_latest):
        assert save_latest is False
        os.makedirs(os.path.join(root, tag))
        with open(os.path.join(root, tag, "state.json"), "w") as fh:
            json.dump(client_state, fh)

    def load_checkpoint(self, root, tag, **_):
        with open(os.path.join(root, tag, "state.json")) as fh:
            return os.path.join(root, tag), json.load(fh)


def test_only_complete_checkpoints_count_and_old_ones_are_pruned(tmp_path):
    mgr = CheckpointManager(str(tmp_path), keep=2, is_writer=True)
    assert mgr.latest() is None
    for step in (10, 20, 30):
        mgr.save(_FakeEngine(), step, {"train_state": {"step": step}})
    assert mgr.complete_steps() == [20, 30]
    os.makedirs(tmp_path / tag_for(40))  # a save that died before its marker
    assert mgr.latest() == 30
    assert mgr.load(_FakeEngine(), 30)["train_state"]["step"] == 30
    mgr.save(_FakeEngine(), 50, {})
    assert sorted(os.listdir(tmp_path)) == [tag_for(30), tag_for(50)]
    assert (tmp_path / tag_for(50) / MARKER).is_file()


def test_keep_zero_keeps_every_checkpoint(tmp_path):
    mgr = CheckpointManager(str(tmp_path), keep=0, is_writer=True)
    for step in (10, 20, 30):
        mgr.save(_FakeEngine(), step, {})
    assert mgr.complete_steps() == [10, 20, 30]


def test_a_missing_tag_is_an_error(tmp_path):
    class Engine:
        def load_checkpoint(self, *a, **k):
            return None, None

    with pytest.raises(RuntimeError, match="could not load"):
        CheckpointManager(str(tmp_path), 2, True).load(Engine(), 10)


def test_tensorboard_tags_per_task_and_metric(tmp_path):
    """lm_eval records become one scalar per (task, metric); others one per field."""
    from draw_megatron.train.metrics import MetricsLog

    class Board:
        def __init__(self):
            self.tags = []

        def add_scalar(self, tag, value, step):
            self.tags.append((tag, value, step))

        def flush(self):
            pass

    log = MetricsLog(str(tmp_path), is_writer=True)
    log._tb = Board()
    log.write({"kind": "lm_eval", "step": 4, "task": "boolq", "metric": "acc", "value": 0.5,
               "stderr": 0.1})
    log.write({"kind": "train", "step": 4, "loss": 2.0, "lr": None})
    assert log._tb.tags == [("lm_eval/boolq/acc", 0.5, 4), ("lm_eval/boolq/acc/stderr", 0.1, 4),
                            ("train/loss", 2.0, 4)]
    log._tb = None
    log.close()
