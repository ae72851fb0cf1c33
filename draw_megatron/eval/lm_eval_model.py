"""Our GPT as a model of the lm-eval harness (registered as ``draw_megatron``).

Two ways to build one:

- ``DrawMegatronLM(module, topology, tokenizer)`` over a live module: the trainer's GPT (a
  DeepSpeed engine's ``.module``), so an in-loop evaluation needs no second copy of the
  weights. Every rank of the world must make the same harness calls with the same requests.
- ``DrawMegatronLM.from_pretrained(path, tokenizer=None, tp=1)``: a run directory (its
  ``model.safetensors``; the tokenizer named by its data root's manifest) or a consolidated
  file plus a tokenizer, loaded into any TP layout. lm-eval's registry
  (``--model draw_megatron --model_args pretrained=PATH,tp=2``) goes this way.

Work over ranks. lm-eval is told it runs in one process (rank 0 of 1) on every rank: each
rank receives every request, takes its share (requests sorted by length, dealt round-robin
over the DP ranks; TP peers share a DP rank and compute the same requests together), and
the results are all-gathered over the DP group, so every rank returns all of them in
request order. Every rank runs the same number of forward passes (idle ranks run a
one-token dummy batch), so a ZeRO-3 module, whose forward gathers parameters
collectively, works too.

Scores. One forward gives this rank's vocabulary shard of the logits. The per-token loss is
the model's own: ``vocab_parallel_cross_entropy`` with ``valid_vocab = cfg.vocab_size``,
exactly what ``GPT.forward(tokens, labels)`` returns. Greedy tokens are the argmax over the
sharded vocabulary: each rank's maximum over its valid columns, the maximum over the TP
group, ties to the smallest id (as ``torch.argmax`` of the full logits); ids the tokenizer
does not have are never chosen.

Context. Inputs longer than ``max_length`` (default: the model's ``seq_len``) lose tokens
on the left, as lm-eval expects. Generation is greedy; its context keeps the last
``max_length - max_gen_toks`` tokens (when ``max_gen_toks >= max_length``, the last
``max_length - 1`` and the window slides). The model has no KV cache: each new token is one
forward over at most ``max_length`` tokens.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist
import yaml
from lm_eval.api.instance import Instance
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import (handle_stop_sequences, normalize_gen_kwargs,
                                  postprocess_generated_text)
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from safetensors import safe_open
from torch import Tensor, nn

from draw_megatron.config.model import ModelConfig
from draw_megatron.data.manifest import Manifest, ManifestError
from draw_megatron.data.tokenizer import Tokenizer
from draw_megatron.model.checkpoint_io import (FILENAME, FORMAT, consolidated_path,
                                               load_consolidated_into)
from draw_megatron.model.gpt import GPT
from draw_megatron.model.init import materialize_
from draw_megatron.parallel import ParallelTopology, vocab_parallel_cross_entropy
from draw_megatron.parallel.mappings import group_rank
from draw_megatron.utils.log import get_logger

logger = get_logger(__name__)

T = TypeVar("T")
DEFAULT_BATCH_SIZE = 8
DEFAULT_MAX_GEN_TOKS = 256
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}


class EvalModelError(ValueError):
    """A model, run directory or tokenizer that cannot be evaluated (a one-line reason)."""


# ------------------------------------------------------------------ the files of a model


def model_file(path: str) -> str:
    """The consolidated file of ``path`` (a run directory or a ``.safetensors`` file)."""
    if not os.path.exists(path):
        raise EvalModelError(f"{path} does not exist (expected a run directory or a "
                             f"consolidated {FILENAME})")
    file = consolidated_path(path)
    if os.path.isdir(path) and not os.path.isfile(file):
        raise EvalModelError(
            f"run directory {path} has no consolidated {FILENAME}: export it with "
            f"`python launch/pretrain_main.py --config {os.path.join(path, 'config.yaml')} "
            f"--export {file}`")
    if not os.path.isfile(file):
        raise EvalModelError(f"{path} is neither a run directory nor a .safetensors file")
    return file


def read_model_config(file: str) -> ModelConfig:
    """The model config stored in a consolidated file's metadata (no tensor is read)."""
    try:
        with safe_open(file, framework="pt", device="cpu") as fh:
            metadata = fh.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for a bad header
        raise EvalModelError(f"{file} is not a safetensors file: {exc}") from exc
    if metadata.get("format") != FORMAT or "model_config" not in metadata:
        raise EvalModelError(f"{file} is not a draw_megatron consolidated model (metadata "
                             f"format {metadata.get('format')!r}, expected {FORMAT!r})")
    return ModelConfig.from_dict(json.loads(metadata["model_config"]), prefix="model")


def tokenizer_path(path: str, tokenizer: str | None) -> str:
    """``tokenizer`` if given, else the one named by the run's data root manifest.

    ``path`` is a run directory or a consolidated file; for a file, the run directory is
    the folder holding it (if that folder has a config.yaml).
    """
    if tokenizer:
        return tokenizer
    run_dir = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    config = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(config):
        raise EvalModelError(f"{path} has no config.yaml beside it to find the tokenizer: "
                             "pass --tokenizer PATH/sp.model")
    with open(config, encoding="utf-8") as fh:
        root = (yaml.safe_load(fh) or {}).get("data", {}).get("root")
    if not root:
        raise EvalModelError(f"{config} names no data.root: pass --tokenizer PATH/sp.model")
    try:
        return Manifest.load(root).tokenizer_path
    except ManifestError as exc:
        raise EvalModelError(f"cannot find the tokenizer of {path} through its data root "
                             f"({exc}); pass --tokenizer PATH/sp.model") from exc


def check_vocabulary(cfg: ModelConfig, tokenizer: Tokenizer) -> None:
    """Raise EvalModelError if the model cannot score every id the tokenizer produces."""
    if cfg.vocab_size < tokenizer.vocab_size:
        raise EvalModelError(
            f"the model's vocabulary ({cfg.vocab_size} ids) is smaller than the tokenizer's "
            f"({tokenizer.vocab_size}, {tokenizer.path}): not the tokenizer it was trained with")


def default_device() -> torch.device:
    """This process's GPU under a launcher (LOCAL_RANK), else the CPU."""
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


def load_model(file: str, topology: ParallelTopology, device: torch.device,
               dtype: torch.dtype, eos_id: int) -> GPT:
    """The consolidated model in ``file``, sharded for ``topology``, in eval mode.

    ``eos_id`` (the tokenizer's) ends documents under a document mask when the file's
    config does not name one. Collective over the TP group only through the process groups
    the topology built.
    """
    cfg = read_model_config(file)
    # The attention kernel is not part of the file's maths: "auto" runs wherever we load.
    cfg = dataclasses.replace(cfg, attention="auto",
                              eos_id=eos_id if cfg.eos_id is None else cfg.eos_id)
    model = GPT(cfg, topology, device="meta")  # no initialisation: the file overwrites it
    materialize_(model, device)
    model.to(dtype)
    load_consolidated_into(file, model, topology)
    return model.eval()


# ------------------------------------------------------------------ the lm-eval model


@register_model("draw_megatron")
class DrawMegatronLM(TemplateLM):
    """lm-eval's ``LM`` over our GPT, under any TP × DP layout (see the module docstring)."""

    def __init__(self, module: nn.Module, topology: ParallelTopology, tokenizer: Tokenizer, *,
                 batch_size: int = DEFAULT_BATCH_SIZE, max_length: int | None = None,
                 max_gen_toks: int = DEFAULT_MAX_GEN_TOKS, source: str = "live module") -> None:
        """Evaluate ``module`` (a :class:`GPT`, or any module with its ``cfg`` and forward)
        as it is: its parameters, dtype and device are used in place, its train/eval mode
        is restored after each harness call.

        ``topology`` is the one the module was built with; ``batch_size`` counts sequences
        per forward on each DP rank; ``max_length`` defaults to ``module.cfg.seq_len``.
        """
        super().__init__()
        check_vocabulary(module.cfg, tokenizer)
        self.module, self.topology, self.tokenizer = module, topology, tokenizer
        self.cfg: ModelConfig = module.cfg
        self.batch_size = _positive_int("batch_size", batch_size)
        self._max_length = _positive_int("max_length", max_length or self.cfg.seq_len, least=2)
        self.max_gen_toks = _positive_int("max_gen_toks", max_gen_toks)
        self.source = source
        self._device = next(module.parameters()).device
        # Sequence parallelism splits the sequence over TP ranks: lengths must divide.
        self._length_multiple = topology.tp_size if getattr(module, "sequence_parallel",
                                                            False) else 1
        self.num_requests, self.seconds = 0, 0.0
        self._warned_sampling = False

    @classmethod
    def from_pretrained(cls, pretrained: str, tokenizer: str | None = None, tp: int = 1,
                        batch_size: int | str | None = DEFAULT_BATCH_SIZE,
                        max_length: int | None = None, max_gen_toks: int = DEFAULT_MAX_GEN_TOKS,
                        device: str | None = None, dtype: str | None = None) -> DrawMegatronLM:
        """Load a run directory or consolidated file (see :func:`tokenizer_path`) for
        evaluation under the initialised process group's TP × DP layout (or one process).

        ``dtype`` defaults to bf16 on GPU and fp32 on CPU; ``device`` to this process's GPU
        (``LOCAL_RANK``) when there is one. Collective when torch.distributed is initialised.
        """
        file = model_file(pretrained)
        cfg = read_model_config(file)
        tok = Tokenizer(tokenizer_path(pretrained, tokenizer))
        check_vocabulary(cfg, tok)
        if dtype is not None and dtype not in DTYPES:
            raise EvalModelError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        where = torch.device(device) if device else default_device()
        torch_dtype = DTYPES[dtype] if dtype else (
            torch.bfloat16 if where.type == "cuda" else torch.float32)
        topology = ParallelTopology.from_dist(tp=_positive_int("tp", tp))
        module = load_model(file, topology, where, torch_dtype, tok.eos_id)
        logger.info("loaded %s (%s, %s) for lm-eval: %s", file, where, torch_dtype, topology)
        return cls(module, topology, tok, batch_size=batch_size or DEFAULT_BATCH_SIZE,
                   max_length=max_length, max_gen_toks=max_gen_toks, source=file)

    # lm-eval's registry builds models through these two: route them to from_pretrained.
    @classmethod
    def create_from_arg_string(cls, arg_string: str,
                               additional_config: dict | None = None) -> DrawMegatronLM:
        from lm_eval.utils import simple_parse_args_string

        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict[str, Any],
                            additional_config: dict | None = None) -> DrawMegatronLM:
        extra = {k: v for k, v in (additional_config or {}).items()
                 if v is not None and k != "max_batch_size"}
        return cls.from_pretrained(**arg_dict, **extra)

    # ------------------------------------------------------------ what lm-eval asks for

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def tokenizer_name(self) -> str:
        return f"sentencepiece-{self.tokenizer.sha256[:16]}"

    def tok_encode(self, string: str, add_special_tokens: bool | None = None,
                   **kwargs: Any) -> list[int]:
        return self.tokenizer.encode(string)

    def tok_decode(self, tokens: Sequence[int]) -> str:
        return self.tokenizer.decode(tokens)

    def get_model_info(self) -> dict[str, Any]:
        """Recorded by lm-eval in its results' ``config``."""
        return {"model_source": self.source, "tokenizer": self.tokenizer.path,
                "tp": self.topology.tp_size, "dp": self.topology.dp_size,
                "dtype": str(next(self.module.parameters()).dtype),
                "max_length": self.max_length}

    @property
    def requests_per_second(self) -> float:
        """Requests answered per second of harness calls so far (0 before any)."""
        return self.num_requests / self.seconds if self.seconds > 0 else 0.0

    def _loglikelihood_tokens(self, requests: list[tuple[tuple[str, str], list[int], list[int]]],
                              disable_tqdm: bool = False, **kwargs: Any
                              ) -> list[tuple[float, bool]]:
        items = [self._scoring_row(context, continuation) for _, context, continuation in requests]
        return self._timed(len(requests), lambda: self._score(items))

    def loglikelihood_rolling(self, requests: list[Instance],
                              disable_tqdm: bool = False) -> list[float]:
        windows, owners = [], []
        for i, (string,) in enumerate(req.args for req in requests):
            for context, continuation in map(make_disjoint_window, get_rolling_token_windows(
                    token_list=self.tok_encode(string), prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length, context_len=1)):
                windows.append(self._scoring_row(context, continuation))
                owners.append(i)
        scores = self._timed(len(requests), lambda: self._score(windows))
        totals = [0.0] * len(requests)
        for owner, (logprob, _) in zip(owners, scores):
            totals[owner] += logprob
        return totals

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        jobs = [self._generation_job(context, gen_kwargs)
                for context, gen_kwargs in (req.args for req in requests)]
        return self._timed(len(requests), lambda: self._generate(jobs))

    # ------------------------------------------------------------ scoring

    def _scoring_row(self, context: list[int], continuation: list[int]) -> tuple[list[int], int]:
        """(the last max_length + 1 tokens of context + continuation, continuation length)."""
        if len(continuation) > self.max_length:
            raise EvalModelError(f"a continuation of {len(continuation)} tokens is longer than "
                                 f"the model's context of {self.max_length}")
        return (context + continuation)[-(self.max_length + 1):], len(continuation)

    def _score(self, rows: list[tuple[list[int], int]]) -> list[tuple[float, bool]]:
        """(Σ log p of the continuation, whether it is the greedy one) for each row."""
        return self._run_shared(rows, self._score_batch, lambda row: len(row[0]))

    def _score_batch(self, rows: list[tuple[list[int], int]]) -> list[tuple[float, bool]]:
        if not rows:  # a short share: a dummy forward keeps the ranks in step
            self._forward([])
            return []
        logits_BTV = self._forward([tokens[:-1] for tokens, _ in rows])
        labels_BT = self._pad([tokens[1:] for tokens, _ in rows], logits_BTV.shape[1], 0)
        loss_BT = vocab_parallel_cross_entropy(logits_BTV, labels_BT, self.topology.tp_group,
                                               valid_vocab=self.cfg.vocab_size)
        greedy_BT = self._argmax(logits_BTV) == labels_BT
        out = []
        for i, (tokens, num_cont) in enumerate(rows):
            span = slice(len(tokens) - 1 - num_cont, len(tokens) - 1)
            out.append((-float(loss_BT[i, span].double().sum()), bool(greedy_BT[i, span].all())))
        return out

    # ------------------------------------------------------------ generation

    def _generation_job(self, context: str, gen_kwargs: dict) -> dict[str, Any]:
        kwargs = normalize_gen_kwargs(gen_kwargs, self.max_gen_toks)
        if kwargs.get("do_sample") and not self._warned_sampling:
            logger.warning("generation asks for sampling (%s): draw_megatron decodes greedily",
                           gen_kwargs)
            self._warned_sampling = True
        max_new = int(kwargs["max_gen_toks"])
        keep = self.max_length - max_new if max_new < self.max_length else self.max_length - 1
        tokens = self.tok_encode(context)[-keep:] or [self.prefix_token_id]
        # The EOS id ends a generation by id; its decoded text is empty, so no stop string.
        return {"tokens": tokens, "max_new": max_new,
                "until": [s for s in handle_stop_sequences(kwargs.get("until"), eos=None) if s]}

    def _generate(self, jobs: list[dict[str, Any]]) -> list[str]:
        return self._run_shared(jobs, self._generate_batch, lambda job: len(job["tokens"]))

    def _generate_batch(self, jobs: list[dict[str, Any]]) -> list[str]:
        """Greedy continuations of ``jobs`` (may be empty: this rank then only keeps step)."""
        generated: list[list[int]] = [[] for _ in jobs]
        active = [job["max_new"] > 0 for job in jobs]
        while self._any_rank(any(active)):
            rows = [i for i, a in enumerate(active) if a]
            windows = [(jobs[i]["tokens"] + generated[i])[-self.max_length:] for i in rows]
            if not windows:  # this rank is done, others are not: keep forward passes equal
                self._forward([[self.prefix_token_id]])
                continue
            logits_BTV = self._forward(windows)
            last = torch.tensor([len(w) - 1 for w in windows], device=logits_BTV.device)
            next_ids = self._argmax(logits_BTV[torch.arange(len(rows)), last]).tolist()
            for i, token in zip(rows, next_ids):
                active[i] = self._append(jobs[i], generated[i], token)
        return [postprocess_generated_text(self.tok_decode(g), job["until"], None)
                for job, g in zip(jobs, generated)]

    def _append(self, job: dict[str, Any], generated: list[int], token: int) -> bool:
        """Add ``token`` unless it is EOS; whether the generation goes on."""
        if token == self.eot_token_id:
            return False
        generated.append(token)
        if len(generated) >= job["max_new"]:
            return False
        text = self.tok_decode(generated)
        return not any(stop in text for stop in job["until"])

    # ------------------------------------------------------------ work over ranks

    def _run_shared(self, items: list[Any], run_batch: Callable[[list[Any]], list[T]],
                    length: Callable[[Any], int]) -> list[T]:
        """``run_batch`` over this DP rank's share of ``items`` in batches; every result, in
        item order, on every rank. All ranks run the same number of batches."""
        topo = self.topology
        order = sorted(range(len(items)), key=lambda i: (-length(items[i]), i))
        mine = order[topo.dp_rank::topo.dp_size]
        num_batches = math.ceil(math.ceil(len(items) / topo.dp_size) / self.batch_size)
        results: dict[int, T] = {}
        was_training = self.module.training
        self.module.eval()
        try:
            with torch.no_grad():
                for b in range(num_batches):
                    chunk = mine[b * self.batch_size:(b + 1) * self.batch_size]
                    results.update(zip(chunk, run_batch([items[i] for i in chunk])))
        finally:
            self.module.train(was_training)
        return self._gather(results, len(items))

    def _gather(self, results: dict[int, T], num_items: int) -> list[T]:
        if self.topology.dp_size > 1:
            parts: list[dict[int, T] | None] = [None] * self.topology.dp_size
            dist.all_gather_object(parts, results, group=self.topology.dp_group)
            results = {k: v for part in parts for k, v in part.items()}
        return [results[i] for i in range(num_items)]

    def _any_rank(self, flag: bool) -> bool:
        """``flag`` of any rank of the DP group (TP peers agree by construction)."""
        if self.topology.dp_size == 1:
            return flag
        value = torch.tensor([float(flag)], device=self._collective_device())
        dist.all_reduce(value, op=dist.ReduceOp.MAX, group=self.topology.dp_group)
        return bool(value.item())

    def _collective_device(self) -> torch.device:
        return self._device if dist.get_backend(self.topology.dp_group) == "nccl" \
            else torch.device("cpu")

    def _timed(self, num_requests: int, fn: Callable[[], T]) -> T:
        start = time.perf_counter()
        out = fn()
        self.seconds += time.perf_counter() - start
        self.num_requests += num_requests
        return out

    # ------------------------------------------------------------ the model

    def _pad(self, rows: list[list[int]], length: int, value: int) -> Tensor:
        out = torch.full((len(rows), length), value, dtype=torch.long)
        for i, row in enumerate(rows):
            out[i, :len(row)] = torch.tensor(row, dtype=torch.long)
        return out.to(self._device)

    def _forward(self, rows: list[list[int]]) -> Tensor:
        """This rank's logits shard [B, T, V/tp] of right-padded ``rows`` (causal: the
        padding never reaches an earlier position). An empty list runs a dummy batch."""
        rows = rows or [[self.prefix_token_id]]
        length = max(map(len, rows))
        length = math.ceil(length / self._length_multiple) * self._length_multiple
        return self.module(self._pad(rows, length, self.prefix_token_id))

    def _argmax(self, logits_V: Tensor) -> Tensor:
        """Global id of the largest logit among the tokenizer's ids, over the TP group."""
        num_local = logits_V.shape[-1]
        start = group_rank(self.topology.tp_group) * num_local
        num_valid = max(0, min(num_local, self.tokenizer.vocab_size - start))
        if self.topology.tp_size == 1:
            return logits_V[..., :num_valid].argmax(dim=-1)
        if num_valid > 0:
            best, index = logits_V[..., :num_valid].float().max(dim=-1)
        else:
            best = logits_V.new_full(logits_V.shape[:-1], float("-inf"), dtype=torch.float32)
            index = torch.zeros(best.shape, dtype=torch.long, device=best.device)
        group = self.topology.tp_group
        top = best.clone()
        dist.all_reduce(top, op=dist.ReduceOp.MAX, group=group)
        # Ties (and the ranks that do not hold the maximum) resolve to the smallest id.
        ids = torch.where(best == top, index + start, torch.full_like(index, 2**62))
        dist.all_reduce(ids, op=dist.ReduceOp.MIN, group=group)
        return ids


def _positive_int(name: str, value: object, least: int = 1) -> int:
    """``value`` as an int of at least ``least`` (lm-eval passes model_args as strings)."""
    try:
        number = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = None
    if number is None or number < least or isinstance(value, bool):
        raise EvalModelError(f"{name} must be an integer >= {least}, got {value!r}")
    return number
