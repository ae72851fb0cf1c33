#!/usr/bin/env python3
"""The converter at scale: throughput and peak memory on a generated Pile-format input.

    python tools/bench_convert_scale.py --generate-gb 0.25 1.0 [--workers 1 2]
    python tools/bench_convert_scale.py --smoke          # a few MB, seconds (for the tests)

Generates, in a temporary folder deleted afterwards, a corpus in The Pile's layout
(train/NN.jsonl.zst of FILE_MB of text each, val.jsonl.zst, test.jsonl.zst; lines
``{"text": ..., "meta": {"pile_set_name": ...}}``) as large as the largest size asked for.
Its documents are runs of lines drawn at seeded random places from the demo corpus's
domains (CPython's own text: sources, docs, docstrings, licences, C headers, plus the
generated arithmetic and noise), so the text is real and varied and SentencePiece does its
full work. A BPE SentencePiece model is trained on it (or ``--tokenizer`` is used). Each
size converts the first train files that hold it (plus val and test) with
tools/convert_pile.py in a child process, once per worker count.

Printed per run: the converter's own seconds (as it prints them: from its start of work to
the manifest, without the child's imports) and the child's wall time, MB/s of input text
(UTF-8 bytes of the documents' text, over the converter's seconds) in total and per worker,
and the peak RSS of the converter's process tree: the tree (the converter
and every process below it: tokenizer workers, the multiprocessing resource tracker) is
polled with psutil every POLL_S seconds and the RSS of its processes summed at each poll;
the peak of that sum is reported, with the largest single process's peak. A poll can miss
a peak shorter than POLL_S.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POLL_S = 0.05
EVAL_FRACTION = 0.005  # val and test each get this share of the largest size (at least 1 doc)


@dataclass(frozen=True)
class Plan:
    sizes_gb: list[float]
    workers: list[int]
    file_mb: float
    pool_mb_per_domain: float
    vocab_size: int
    sample_mb: float
    seq_len: int
    shard_size: str | None = None


SMOKE = Plan(sizes_gb=[0.001, 0.002], workers=[1, 2], file_mb=0.5, pool_mb_per_domain=0.05,
             vocab_size=600, sample_mb=0.5, seq_len=128)


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, Plan]:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generate-gb", type=float, nargs="+", default=[0.25, 1.0],
                   help="input sizes in GB (10^9 bytes of document text)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--file-mb", type=float, default=50.0, help="text per train file")
    p.add_argument("--pool-mb-per-domain", type=float, default=1.0,
                   help="demo-corpus text per domain that documents are drawn from")
    p.add_argument("--tokenizer", help="a SentencePiece .model to use instead of training one")
    p.add_argument("--vocab-size", type=int, default=8000)
    p.add_argument("--sample-mb", type=float, default=8.0, help="tokenizer training sample")
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--shard-size", help="the converter's --shard-size (default: its own). Each "
                   "open domain buffers up to one shard, so peak RSS rises with the input until "
                   "every domain has filled one; a size that the smallest input fills shows "
                   "whether anything else grows")
    p.add_argument("--tmp", help="parent folder of the temporary input and outputs")
    p.add_argument("--smoke", action="store_true", help="a few MB, to check the tool runs")
    args = p.parse_args(argv)
    if args.smoke:
        return args, SMOKE
    if min(args.generate_gb) <= 0 or min(args.workers) < 1:
        p.error("--generate-gb must be > 0 and --workers >= 1")
    return args, Plan(sorted(args.generate_gb), args.workers, args.file_mb,
                      args.pool_mb_per_domain, args.vocab_size, args.sample_mb, args.seq_len,
                      args.shard_size)


# ---------------------------------------------------------------------------------------
# The input


def _line_pools(mb_per_domain: float) -> dict[str, list[str]]:
    """Each demo-corpus domain's train text, as lines (ends kept)."""
    from draw_megatron.data.demo_corpus import DemoCorpusConfig, collect_domains

    pools = {}
    for src, splits, _ in collect_domains(DemoCorpusConfig(max_mb_per_domain=mb_per_domain)):
        lines = [ln for doc in splits["train"] for ln in doc.text.splitlines(keepends=True)]
        pools[src.name] = lines
    return pools


def _document(rng: random.Random, lines: list[str]) -> str:
    """A few runs of consecutive lines from random places: local structure, new whole."""
    parts = []
    for _ in range(rng.randint(1, 6)):
        start = rng.randrange(len(lines))
        parts.extend(lines[start:start + rng.randint(3, 60)])
    return "".join(parts)


class _Writer:
    """A .jsonl.zst file written line by line; counts its documents and text bytes."""

    def __init__(self, path: str):
        import zstandard

        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.path, self.fh = path, open(path, "wb")
        self.out = zstandard.ZstdCompressor(level=3).stream_writer(self.fh)
        self.docs = self.text_bytes = 0

    def add(self, text: str, domain: str) -> None:
        line = json.dumps({"text": text, "meta": {"pile_set_name": domain}}) + "\n"
        self.out.write(line.encode("utf-8"))
        self.docs += 1
        self.text_bytes += len(text.encode("utf-8"))

    def close(self) -> None:
        self.out.close()  # also closes the file


def generate(root: str, plan: Plan) -> dict:
    """Write the input under ``root``; return its files and text bytes."""
    pools = _line_pools(plan.pool_mb_per_domain)
    names = sorted(pools)
    rng = random.Random(0)
    total = int(max(plan.sizes_gb) * 1e9)
    file_bytes = int(plan.file_mb * 1e6)
    info: dict = {"train": [], "domains": names}
    for split in ("val", "test"):
        w = _Writer(os.path.join(root, f"{split}.jsonl.zst"))
        while w.docs == 0 or w.text_bytes < total * EVAL_FRACTION:
            name = rng.choice(names)
            w.add(_document(rng, pools[name]), name)
        w.close()
        info[split] = (w.path, w.text_bytes)
    written = 0
    while written < total:
        w = _Writer(os.path.join(root, "train", f"{len(info['train']):02d}.jsonl.zst"))
        while w.text_bytes < file_bytes and written + w.text_bytes < total:
            name = rng.choice(names)
            w.add(_document(rng, pools[name]), name)
        w.close()
        written += w.text_bytes
        info["train"].append((w.path, w.text_bytes))
    return info


def _inputs_for(info: dict, size_gb: float) -> tuple[list[str], int]:
    """The first train files holding ``size_gb`` of text, plus val and test; their bytes."""
    files, text = [], 0
    for path, nbytes in info["train"]:
        if text >= size_gb * 1e9 * 0.999:
            break
        files.append(path)
        text += nbytes
    return files, text + info["val"][1] + info["test"][1]


# ---------------------------------------------------------------------------------------
# The runs


class _TreePeak(threading.Thread):
    """Polls a process and its descendants: the peak of their summed RSS, and of the largest."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        import psutil

        self.root = psutil.Process(pid)
        self.stop = threading.Event()
        self.peak_sum = self.peak_one = self.most_procs = 0

    def run(self) -> None:
        import psutil

        while not self.stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                break
            rss = []
            for proc in procs:
                try:
                    rss.append(proc.memory_info().rss)
                except psutil.Error:
                    pass  # ended between the listing and the read
            self.peak_sum = max(self.peak_sum, sum(rss))
            self.peak_one = max(self.peak_one, max(rss, default=0))
            self.most_procs = max(self.most_procs, len(rss))
            self.stop.wait(POLL_S)


@dataclass
class Run:
    seconds: float
    """The converter's own time, as it prints it."""
    wall: float
    """The child process's wall time (imports included)."""
    peak: _TreePeak


def convert(files: list[str], info: dict, tokenizer: str, workers: int, plan: Plan,
            out: str) -> Run:
    """tools/convert_pile.py in a child process, its process tree polled."""
    cmd = [sys.executable, os.path.join(REPO, "tools", "convert_pile.py"),
           f"--split=train={','.join(files)}", f"--split=val={info['val'][0]}",
           f"--split=test={info['test'][0]}", "--tokenizer", tokenizer,
           "--seq-len", str(plan.seq_len), "--workers", str(workers), "--out", out]
    if plan.shard_size:
        cmd += ["--shard-size", plan.shard_size]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get(
        "PYTHONPATH")]))}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    peak = _TreePeak(proc.pid)
    peak.start()
    log, _ = proc.communicate()
    wall = time.perf_counter() - t0
    peak.stop.set()
    peak.join()
    done = re.search(r"^wrote .* in ([0-9.]+) s:", log, re.MULTILINE)
    if proc.returncode != 0 or done is None:
        raise RuntimeError(f"the converter failed ({proc.returncode}):\n{log[-3000:]}")
    return Run(float(done.group(1)), wall, peak)


def main(argv: list[str] | None = None) -> int:
    args, plan = parse_args(argv)
    sys.path.insert(0, REPO)
    from draw_megatron.data.tokenizer import train_tokenizer

    scratch = tempfile.mkdtemp(prefix="bench_convert_scale_", dir=args.tmp)
    try:
        t0 = time.perf_counter()
        info = generate(os.path.join(scratch, "input"), plan)
        gen_s = time.perf_counter() - t0
        text = sum(b for _, b in info["train"]) + info["val"][1] + info["test"][1]
        print(f"input: {text / 1e6:.1f} MB of text in {len(info['train'])} train files + val + "
              f"test, {len(info['domains'])} domains, generated in {gen_s:.1f} s; "
              f"seq_len {plan.seq_len}, shard size {plan.shard_size or 'default'}; "
              f"{os.cpu_count()} CPUs")
        tokenizer = args.tokenizer
        if tokenizer is None:
            t0 = time.perf_counter()
            tokenizer = train_tokenizer([p for p, _ in info["train"][:4]], plan.vocab_size,
                                        os.path.join(scratch, "tok", "sp"),
                                        sample_mb=plan.sample_mb)
            print(f"tokenizer: {plan.vocab_size}-piece BPE trained on {plan.sample_mb} MB in "
                  f"{time.perf_counter() - t0:.1f} s")
        peaks: dict[tuple[float, int], int] = {}
        for size in plan.sizes_gb:
            files, nbytes = _inputs_for(info, size)
            for workers in plan.workers:
                out = os.path.join(scratch, "out")
                run = convert(files, info, tokenizer, workers, plan, out)
                shutil.rmtree(out, ignore_errors=True)
                peak = run.peak
                peaks[size, workers] = peak.peak_sum
                mbs = nbytes / 1e6 / run.seconds
                print(f"size {size:g} GB ({nbytes / 1e6:.1f} MB text, {len(files)} train files), "
                      f"workers {workers}: {run.seconds:.1f} s ({run.wall:.1f} s with the "
                      f"process start), {mbs:.2f} MB/s total, "
                      f"{mbs / workers:.2f} MB/s per worker, peak RSS tree "
                      f"{peak.peak_sum / 1e6:.0f} MB (largest process {peak.peak_one / 1e6:.0f} "
                      f"MB, up to {peak.most_procs} processes)")
        small, large = plan.sizes_gb[0], plan.sizes_gb[-1]
        if small != large:
            for workers in plan.workers:
                grow = peaks[large, workers] - peaks[small, workers]
                print(f"peak RSS growth {small:g} -> {large:g} GB, workers {workers}: "
                      f"{grow / 1e6:+.0f} MB ({peaks[large, workers] / peaks[small, workers]:.3f}x)")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
