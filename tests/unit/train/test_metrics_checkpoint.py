import json
import os
import re

import pytest

from draw_megatron.train.checkpoint import (MARKER, CheckpointManager, Layout, LayoutMismatch,
                                            check_reshape, tag_for, universal_info)
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


# ---------------------------------------------------------------- layout and file checks

DP2 = Layout(tp=1, dp=2, zero_stage=1, world_size=2)
TP2 = Layout(tp=2, dp=1, zero_stage=1, world_size=2)


def _saved(tmp_path, steps=(10, 20), layout=DP2) -> CheckpointManager:
    mgr = CheckpointManager(str(tmp_path), keep=0, is_writer=True, layout=None)
    for step in steps:
        mgr.save(_FakeEngine(), step, {"train_state": {"step": step}})
        marker = json.loads((tmp_path / tag_for(step) / MARKER).read_text())
        marker["layout"] = layout.__dict__
        (tmp_path / tag_for(step) / MARKER).write_text(json.dumps(marker))
    return mgr


def test_the_marker_records_every_file_and_a_changed_file_falls_back(tmp_path, caplog):
    mgr = _saved(tmp_path)
    marker = json.loads((tmp_path / tag_for(20) / MARKER).read_text())
    size, digest = marker["files"]["state.json"]
    assert size == os.path.getsize(tmp_path / tag_for(20) / "state.json")
    assert digest.startswith("xxh64:")
    assert mgr.verify(20) is None and mgr.latest_valid() == 20
    broken = tmp_path / tag_for(20) / "state.json"
    broken.write_text(broken.read_text()[:-1] + " ")  # same size, other bytes
    assert mgr.verify(20) == f"{broken} changed since it was saved (hash mismatch)"
    with open(broken, "r+b") as fh:
        fh.truncate(3)
    assert mgr.verify(20) == f"{broken} has 3 bytes, {size} when it was saved"
    assert mgr.latest() == 20 and mgr.latest_valid() == 10
    assert str(broken) in caplog.text
    (tmp_path / tag_for(10) / "state.json").unlink()
    assert mgr.latest_valid() is None


def test_a_layout_mismatch_names_both_layouts(tmp_path):
    _saved(tmp_path, steps=(10,))
    mgr = CheckpointManager(str(tmp_path), 0, False, layout=TP2)
    with pytest.raises(LayoutMismatch) as err:
        mgr.load(_FakeEngine(), 10)
    assert str(err.value) == ("the checkpoint step_00000010 was saved at tp 1 x dp 2 (ZeRO 1); "
                              "this run is tp 2 x dp 1 (ZeRO 1): set run.resume_layout=reshape")
    same = CheckpointManager(str(tmp_path), 0, False, layout=DP2)
    assert same.load(_FakeEngine(), 10)["train_state"]["step"] == 10


@pytest.mark.parametrize("saved,now,ok", [
    ((1, 2, 1), (2, 1, 2), True), ((2, 1, 2), (1, 1, 1), True), ((1, 2, 0), (1, 1, 0), True),
    ((1, 2, 0), (2, 1, 0), False), ((1, 2, 0), (1, 2, 1), False), ((1, 2, 3), (1, 1, 3), False),
    ((1, 2, 1), (1, 2, 3), False)])
def test_which_reshapes_are_allowed(saved, now, ok):
    saved, now = (Layout(tp, dp, zero, tp * dp) for tp, dp, zero in (saved, now))
    if ok:
        check_reshape(saved, now)
    else:
        with pytest.raises(LayoutMismatch, match=f"saved at {re.escape(saved.describe())}"):
            check_reshape(saved, now)


def test_universal_info_describes_our_tp_slicing():
    from draw_megatron.model import GPT
    from draw_megatron.parallel import ParallelTopology
    from tests.unit.model.tiny import tiny_config

    model = GPT(tiny_config(mlp="swiglu"), ParallelTopology.single(), device="meta")
    info = universal_info(model)
    names = dict(model.named_parameters())

    def matched(patterns):
        return {n for n in names if any(re.match(p, n) for p in patterns)}

    replicated = matched(info["tp_replicated_parameter_patterns"])
    rows = matched(info["parameter_with_row_parallelism_patterns"])
    fused = {n: s for s in info["parameter_with_sub_params"] for n in matched(s["patterns"])}
    assert replicated == {n for n, p in names.items() if not getattr(p, "tensor_model_parallel",
                                                                     False)}
    assert rows and all(names[n].partition_dim == 1 for n in rows)
    assert {n.rsplit(".", 2)[-2] for n in fused} == {"qkv", "gate_up"}
    assert all(s["shape"][0] == names[n].partition_stride for n, s in fused.items())
