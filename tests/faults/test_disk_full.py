"""A disk that fills during conversion: tools/convert_pile.py under a file-size limit
(RLIMIT_FSIZE, set in the child before exec) fails with one error line naming the output,
leaves the previous output as it was and no temporary data root beside it."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

from tests.distributed.test_launchers import REPO, _base_env
from tests.unit.data.test_convert import _tree_digest

TOOL = os.path.join(REPO, "tools", "convert_pile.py")
LIMIT = 64 << 10  # bytes: far below the shards this corpus gives


def _corpus(path: str, docs: int, seed: int) -> str:
    import random

    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "river", "stone", "green", "quiet", "seven"]
    with open(path, "w") as fh:
        for _ in range(docs):
            text = " ".join(rng.choice(words) for _ in range(rng.randint(40, 120)))
            fh.write(json.dumps({"text": text, "meta": {"pile_set_name": "Pile-CC"}}) + "\n")
    return path


def _convert(src: str, tokenizer: str, out: str, limit: int | None):
    def set_limit() -> None:
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**_base_env(), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, TOOL, "--split", f"train={src}", "--tokenizer",
                           tokenizer, "--seq-len", "16", "--out", out, "--overwrite"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
                          preexec_fn=set_limit)


def test_a_full_disk_is_one_error_line_and_the_previous_output_stays(demo_tokenizer_path,
                                                                       tmp_path):
    out = str(tmp_path / "data")
    small = _corpus(str(tmp_path / "small.jsonl"), 50, seed=0)
    first = _convert(small, demo_tokenizer_path, out, limit=None)
    assert first.returncode == 0, first.stderr[-2000:]
    before = _tree_digest(out)

    big = _corpus(str(tmp_path / "big.jsonl"), 3000, seed=1)
    res = _convert(big, demo_tokenizer_path, out, limit=LIMIT)
    assert res.returncode == 1, (res.returncode, res.stderr[-2000:])
    lines = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert lines == [f"error: no room to write {out} (File too large): nothing was written "
                     "there and a previous output is intact; free space and rerun"], res.stderr
    assert _tree_digest(out) == before
    assert sorted(os.listdir(tmp_path)) == ["big.jsonl", "data", "small.jsonl"]
