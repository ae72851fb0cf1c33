"""The DGA pass's α_0 is the training split's natural weights — sequence counts × epochs, as
the natural baseline samples them — and its probe size is global (train.micro_batch by
default), whatever the DP size."""

import json
import os

import numpy as np

from draw_megatron.data.domains import DomainData
from draw_megatron.data.manifest import Manifest
from draw_megatron.model import GPT
from draw_megatron.parallel import ParallelTopology
from draw_megatron.passes.base import PassContext
from draw_megatron.passes.dga import DGAConfig
from tests.unit.data.synthetic import make_synthetic_root
from tests.unit.model.tiny import one_thread, tiny_config  # noqa: F401  (fixture)

SIZES = [6, 6, 12]
EPOCHS = [3.0, 1.0, 1.0]


def _root(tmp_path) -> str:
    root = make_synthetic_root(str(tmp_path / "data"), SIZES, seq_len=16, vocab_size=300,
                               splits=("train", "val", "test"))
    path = os.path.join(root, "manifest.json")
    with open(path) as fh:
        manifest = json.load(fh)
    mass = [s * e for s, e in zip(SIZES, EPOCHS)]
    for d, epochs, m in zip(manifest["domains"], EPOCHS, mass):
        d["epochs"] = epochs
        for counts in d["splits"].values():
            counts["natural_weight"] = m / sum(mass)
    with open(path, "w") as fh:
        json.dump(manifest, fh)
    return root


def test_alpha0_is_the_natural_weights_with_epochs(tmp_path):
    manifest = Manifest.load(_root(tmp_path))
    data = DomainData(manifest, "train")
    topology = ParallelTopology.single()
    cfg = tiny_config()
    ctx = PassContext(model=GPT(cfg, topology), topology=topology, manifest=manifest,
                      train_data=data, model_cfg=cfg, device="cpu", seed=1,
                      run_dir=str(tmp_path / "run"), is_writer=True, micro_batch=3,
                      gradient_accumulation_steps=1, train_split="train", eval_split="val",
                      initial_weights=np.full(3, 1 / 3), load_frozen=None)
    dga = DGAConfig.from_dict({"eta": 1.0, "specific": "test"}).build()
    try:
        dga.setup(ctx)
        mass = np.array(SIZES) * np.array(EPOCHS)
        np.testing.assert_allclose(dga.initial_weights(), mass / mass.sum())
        assert not np.allclose(dga.initial_weights(), np.array(SIZES) / sum(SIZES))
        assert dga.align.num == 3  # train.micro_batch sequences over all DP ranks
    finally:
        dga.close()
        data.close()
