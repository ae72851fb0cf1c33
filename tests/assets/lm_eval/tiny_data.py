"""Datasets of the local test tasks: the jsonl files beside this module.

lm-eval resolves ``!function tiny_data.NAME`` next to the YAML, so the tasks work from any
working directory (a ``dataset_path: json`` task would need absolute ``data_files``).
Rows are read into in-memory datasets: nothing is cached on disk.
"""

from __future__ import annotations

import json
import os

import datasets

HERE = os.path.dirname(os.path.abspath(__file__))


def _split(filename: str) -> datasets.Dataset:
    with open(os.path.join(HERE, filename), encoding="utf-8") as fh:
        return datasets.Dataset.from_list([json.loads(line) for line in fh if line.strip()])


def _dataset(prefix: str, splits: tuple[str, ...] = ("train", "test")) -> datasets.DatasetDict:
    return datasets.DatasetDict({split: _split(f"{prefix}_{split}.jsonl") for split in splits})


def multiple_choice(**metadata) -> datasets.DatasetDict:
    return _dataset("mc")


def generation(**metadata) -> datasets.DatasetDict:
    return _dataset("gen")


def text(**metadata) -> datasets.DatasetDict:
    return _dataset("text", splits=("test",))
