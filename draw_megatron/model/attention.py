"""Self-attention with heads split over tensor parallelism, its masks and its kernels.

Masks (``model.attention_mask``), built once per batch as an :class:`AttentionMask` and
shared by every layer:

- ``causal``: a token sees itself and every earlier token of its sequence;
- ``document``: a token sees itself and the earlier tokens of its own document. A packed
  sequence is documents each followed by EOS (``[d1 … EOS d2 … EOS …]``); the token right
  after an EOS starts a new document and the EOS belongs to the document it ends, the
  convention of Megatron-LM's ``reset_attention_mask``. So the last token of a document
  predicts the EOS from its own document, and the EOS's own prediction (the next
  document's first token) is the one prediction still made from the previous document,
  as without the mask; every other token is predicted from its own document only. The
  first document of a sequence is whatever was left of a document cut by the packing.
  ``model.position_reset`` restarts the rotary positions at each document start (rotary
  scores depend on offsets only, so under this mask that changes results by rounding only).

Backends (``model.attention``); none of them is ever handed a dense [T, T] mask:

- ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` with ``is_causal=True``,
  its kernels tried in the explicit order cuDNN, flash, memory-efficient, math (torch's
  own order does not put the fastest Hopper kernel first); on CPU only the CPU kernels
  apply. Document mask: one causal call per document (a Python loop: exact, with
  gradients and dropout, the CPU path; slow on a GPU);
- ``flex``: ``torch.nn.attention.flex_attention`` with a block mask (causal, or causal
  within documents), compiled with ``torch.compile`` on CUDA. On CPU, torch runs it eagerly
  and unfused, and forward only (torch has no FlexAttention backward on CPU): calling it
  with gradients on CPU is an error. No attention dropout;
- ``flash``: flash-attn 3 (``flash_attn_interface``) when importable, else flash-attn 2
  (``flash_attn``): ``flash_attn_func`` causal, or ``flash_attn_varlen_func`` with one
  variable-length sequence per document. CUDA fp16/bf16 only; an error if it cannot run,
  never a silent fallback;
- ``auto``: CPU: sdpa. CUDA: sdpa for the causal mask; flex for the document mask (flash,
  else sdpa, when attention dropout is on). Resolved per call from the tensors, so a model
  built on CPU and moved to GPU does the right thing.

Tensor parallelism (n ranks, h heads, h/n per rank): the fused QKV projection is
column-parallel with stride 3, so rank r's output holds [Q_r; K_r; V_r], the q, k, v of
heads [r·h/n, (r+1)·h/n); attention needs no communication and the mask, which depends on
the tokens only, is the same on every rank; the output projection is row-parallel and sums
the ranks' partial products (or reduce-scatters them along the sequence under sequence
parallelism, whose QKV projection all-gathers the full sequence first, so attention always
sees all T tokens).
"""

from __future__ import annotations

import functools
import warnings
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributed import ProcessGroup
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

from draw_megatron.model.rotary import apply_rotary
from draw_megatron.parallel import ColumnParallelLinear, RowParallelLinear
from draw_megatron.parallel.mappings import group_size

BACKENDS = ("auto", "sdpa", "flex", "flash")
_FLASH_DTYPES = (torch.float16, torch.bfloat16)
# Fastest first on Hopper; torch skips those that cannot run these tensors.
SDPA_ORDER = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION,
              SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


@functools.cache
def flash_attn_module() -> ModuleType | None:
    """flash-attn 3's ``flash_attn_interface``, else flash-attn 2's ``flash_attn``, else None
    (checked once). Both expose ``flash_attn_func`` and ``flash_attn_varlen_func``."""
    for name in ("flash_attn_interface", "flash_attn"):
        try:
            return __import__(name)
        except Exception:  # ImportError, or a wheel built against another torch/CUDA
            continue
    return None


@functools.cache
def compiled_flex_attention():
    """``flex_attention`` compiled once per process (fused kernels; CUDA only here)."""
    return torch.compile(flex_attention, dynamic=False)


def check_backend_available(name: str, *, dropout: float = 0.0) -> None:
    """Raise ValueError/RuntimeError now if backend ``name`` can never run here, or not with
    attention dropout ``dropout``."""
    if name not in BACKENDS:
        raise ValueError(f"model.attention={name!r} is not one of {', '.join(BACKENDS)}")
    if name == "flash" and flash_attn_module() is None:
        raise RuntimeError(
            "model.attention='flash' but flash-attn is not importable: install it on a CUDA "
            "machine (pip install 'draw_megatron[gpu]', i.e. flash-attn>=2.6), or set "
            "model.attention=sdpa (or auto, which falls back to SDPA)")
    if name == "flex" and dropout > 0:
        raise ValueError(f"model.attention='flex' has no attention dropout but model.dropout="
                         f"{dropout}; use model.attention=sdpa, flash or auto")


def select_backend(name: str, device: torch.device, dtype: torch.dtype, *,
                   document: bool = False, dropout_p: float = 0.0) -> str:
    """The kernel that runs for tensors on ``device`` of ``dtype``: "sdpa", "flex" or "flash".

    ``document``: the document mask is asked for; ``dropout_p``: attention dropout is on.
    """
    check_backend_available(name, dropout=dropout_p)
    cuda = torch.device(device).type == "cuda"
    flash_ok = flash_attn_module() is not None and cuda and dtype in _FLASH_DTYPES
    if name == "flash" and not flash_ok:
        raise RuntimeError(
            f"model.attention='flash' needs CUDA fp16/bf16 tensors, got {dtype} on "
            f"{torch.device(device)}; use model.attention=sdpa or auto")
    if name != "auto":
        return name
    if not (cuda and document):
        return "sdpa"
    if dropout_p == 0.0:
        return "flex"
    return "flash" if flash_ok else "sdpa"


# --------------------------------------------------------------------------- masks


def document_ids(tokens_BT: Tensor, eos_id: int) -> Tensor:
    """Per token, the index of its document in its sequence [B, T] (int64, from 0).

    An EOS belongs to the document it ends; the token after it starts the next one.
    """
    is_eos = (tokens_BT == eos_id).long()
    return is_eos.cumsum(dim=1) - is_eos


def document_positions(doc_ids_BT: Tensor) -> Tensor:
    """Per token, its position inside its own document [B, T] (int64, 0 at each start)."""
    seq = doc_ids_BT.shape[1]
    index = torch.arange(seq, device=doc_ids_BT.device).expand_as(doc_ids_BT)
    starts = torch.zeros_like(doc_ids_BT, dtype=torch.bool)
    starts[:, 0] = True
    starts[:, 1:] = doc_ids_BT[:, 1:] != doc_ids_BT[:, :-1]
    start_index = torch.where(starts, index, torch.zeros_like(index)).cummax(dim=1).values
    return index - start_index


def _causal_mod(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
    return q_idx >= kv_idx


def _document_mod(doc_ids_BT: Tensor):
    def mask_mod(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        return (q_idx >= kv_idx) & (doc_ids_BT[b, q_idx] == doc_ids_BT[b, kv_idx])
    return mask_mod


class AttentionMask:
    """What each query may see, for one batch: causal, or causal within documents.

    Built once per batch (``GPT.forward``) and passed to every layer; the forms a kernel
    needs (a FlexAttention block mask, varlen offsets) are made on first use and kept, so
    the layers, and the recomputation of checkpointed layers, share them.
    """

    def __init__(self, seq_len: int, doc_ids_BT: Tensor | None = None) -> None:
        self.seq_len = seq_len
        self.doc_ids_BT = doc_ids_BT
        self._block_mask: BlockMask | None = None
        self._cu_seqlens: tuple[Tensor, int] | None = None

    @classmethod
    def causal(cls, seq_len: int) -> AttentionMask:
        return cls(seq_len)

    @classmethod
    def documents(cls, tokens_BT: Tensor, eos_id: int) -> AttentionMask:
        """Documents of ``tokens_BT`` [B, T] split after each ``eos_id``."""
        return cls(tokens_BT.shape[1], document_ids(tokens_BT, eos_id))

    @property
    def is_document(self) -> bool:
        return self.doc_ids_BT is not None

    def positions(self) -> Tensor:
        """Per-token positions restarting at each document [B, T] (document masks only)."""
        if self.doc_ids_BT is None:
            raise ValueError("positions per document need a document mask")
        return document_positions(self.doc_ids_BT)

    def block_mask(self, device: torch.device) -> BlockMask:
        """The FlexAttention block mask (batch-wide for causal; per sequence for documents)."""
        if self._block_mask is None:
            if self.doc_ids_BT is None:
                self._block_mask = create_block_mask(_causal_mod, None, None, self.seq_len,
                                                     self.seq_len, device=device)
            else:
                doc = self.doc_ids_BT.to(device)
                self._block_mask = create_block_mask(_document_mod(doc), doc.shape[0], None,
                                                     self.seq_len, self.seq_len, device=device)
        return self._block_mask

    def cu_seqlens(self) -> tuple[Tensor, int]:
        """flash-attn varlen form over the flattened batch [B·T]: the int32 offsets at which
        each document starts, then B·T; and the longest document's length."""
        if self.doc_ids_BT is None:
            raise ValueError("varlen offsets need a document mask")
        if self._cu_seqlens is None:
            doc = self.doc_ids_BT
            starts = document_positions(doc).flatten() == 0
            offsets = torch.nonzero(starts).flatten()
            total = torch.tensor([doc.numel()], device=doc.device)
            cu = torch.cat([offsets, total]).to(torch.int32)
            self._cu_seqlens = cu, int((cu[1:] - cu[:-1]).max())
        return self._cu_seqlens


# --------------------------------------------------------------------------- kernels


def _sdpa(q_BTHD: Tensor, k_BTHD: Tensor, v_BTHD: Tensor, dropout_p: float) -> Tensor:
    q, k, v = (t.transpose(1, 2) for t in (q_BTHD, k_BTHD, v_BTHD))  # SDPA wants [B, H, T, D]
    with sdpa_kernel(SDPA_ORDER, set_priority=True):
        out_BHTD = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
    return out_BHTD.transpose(1, 2)


def _sdpa_documents(q: Tensor, k: Tensor, v: Tensor, mask: AttentionMask,
                    dropout_p: float) -> Tensor:
    """One causal SDPA call per document of the flattened batch; documents tile it in order."""
    batch, seq, heads, dim = q.shape
    flat = [t.reshape(1, batch * seq, heads, dim) for t in (q, k, v)]
    bounds = mask.cu_seqlens()[0].tolist()
    outs = [_sdpa(*(t[:, start:end] for t in flat), dropout_p)
            for start, end in zip(bounds[:-1], bounds[1:])]
    return torch.cat(outs, dim=1).view(batch, seq, heads, dim)


def _flex(q_BTHD: Tensor, k_BTHD: Tensor, v_BTHD: Tensor, mask: AttentionMask) -> Tensor:
    q, k, v = (t.transpose(1, 2) for t in (q_BTHD, k_BTHD, v_BTHD))
    block_mask = mask.block_mask(q.device)
    if q.device.type == "cuda":
        out = compiled_flex_attention()(q, k, v, block_mask=block_mask)
    elif torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        raise RuntimeError("model.attention='flex' cannot backpropagate on CPU (torch has no "
                           "FlexAttention backward there); use model.attention=sdpa or auto "
                           "on CPU, or run flex under torch.no_grad()")
    else:
        with warnings.catch_warnings():  # eager on CPU on purpose: compiling costs a minute
            warnings.filterwarnings("ignore", message="flex_attention called without")
            out = flex_attention(q, k, v, block_mask=block_mask)
    return out.transpose(1, 2)


def _flash(q: Tensor, k: Tensor, v: Tensor, mask: AttentionMask, dropout_p: float) -> Tensor:
    module = flash_attn_module()
    extra = {}
    if dropout_p > 0:
        if module.__name__ == "flash_attn_interface":
            raise RuntimeError("flash-attn 3 has no attention dropout: set model.dropout=0 or "
                               "model.attention=sdpa")
        extra["dropout_p"] = dropout_p
    if not mask.is_document:
        out = module.flash_attn_func(q, k, v, causal=True, **extra)
        return out[0] if isinstance(out, tuple) else out  # some versions add the LSE
    batch, seq, heads, dim = q.shape
    cu, longest = mask.cu_seqlens()
    cu = cu.to(q.device)
    flat = [t.reshape(batch * seq, heads, dim) for t in (q, k, v)]
    out = module.flash_attn_varlen_func(*flat, cu, cu, longest, longest, causal=True, **extra)
    out = out[0] if isinstance(out, tuple) else out
    return out.view(batch, seq, heads, dim)


def attention(q_BTHD: Tensor, k_BTHD: Tensor, v_BTHD: Tensor, *, backend: str,
              dropout_p: float, mask: AttentionMask | None = None) -> Tensor:
    """softmax(q kᵀ / √D + mask) v, per head; inputs and output [B, T, H, D].

    ``mask`` None: causal over the sequence.
    """
    mask = mask or AttentionMask.causal(q_BTHD.shape[1])
    kernel = select_backend(backend, q_BTHD.device, q_BTHD.dtype, document=mask.is_document,
                            dropout_p=dropout_p)
    if kernel == "flash":
        return _flash(q_BTHD, k_BTHD, v_BTHD, mask, dropout_p)
    if kernel == "flex":
        return _flex(q_BTHD, k_BTHD, v_BTHD, mask)
    if mask.is_document:
        return _sdpa_documents(q_BTHD, k_BTHD, v_BTHD, mask, dropout_p)
    return _sdpa(q_BTHD, k_BTHD, v_BTHD, dropout_p)


def causal_attention(q_BTHD: Tensor, k_BTHD: Tensor, v_BTHD: Tensor, *, backend: str,
                     dropout_p: float) -> Tensor:
    """softmax(q kᵀ / √D + causal mask) v, per head; inputs and output [B, T, H, D]."""
    return attention(q_BTHD, k_BTHD, v_BTHD, backend=backend, dropout_p=dropout_p)


class ParallelSelfAttention(nn.Module):
    """Fused QKV (column-parallel) → rotary → masked attention → output (row-parallel).

    Input and output are [B, T, d_model], or [B, T/n, d_model] under sequence parallelism.
    The rotary tables are [T, D] (positions 0..T−1) or [B, T, D] (per-token positions).
    """

    def __init__(self, d_model: int, n_heads: int, head_dim: int, tp_group: ProcessGroup | None,
                 *, backend: str = "auto", dropout: float = 0.0, sequence_parallel: bool = False,
                 device=None) -> None:
        super().__init__()
        check_backend_available(backend, dropout=dropout)
        tp_size = group_size(tp_group)
        if n_heads % tp_size:
            raise ValueError(f"model.n_heads={n_heads} must be divisible by the "
                             f"tensor-parallel size {tp_size}")
        inner = n_heads * head_dim
        self.qkv = ColumnParallelLinear(d_model, 3 * inner, tp_group, bias=False, stride=3,
                                        sequence_parallel=sequence_parallel, device=device)
        self.proj = RowParallelLinear(inner, d_model, tp_group, bias=False,
                                      input_is_parallel=True,
                                      sequence_parallel=sequence_parallel, device=device)
        self.local_heads = n_heads // tp_size
        self.head_dim = head_dim
        self.backend = backend
        self.dropout = dropout

    def forward(self, x_BTD: Tensor, cos: Tensor, sin: Tensor,
                mask: AttentionMask | None = None) -> Tensor:
        qkv = self.qkv(x_BTD)  # [B, T, 3 · local_heads · head_dim], full T
        batch, seq = qkv.shape[:2]
        q, k, v = qkv.view(batch, seq, 3, self.local_heads, self.head_dim).unbind(dim=2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        out = attention(q, k, v, backend=self.backend, mask=mask,
                        dropout_p=self.dropout if self.training else 0.0)
        return self.proj(out.reshape(batch, seq, self.local_heads * self.head_dim))

    def extra_repr(self) -> str:
        return (f"local_heads={self.local_heads}, head_dim={self.head_dim}, "
                f"backend={self.backend!r}, dropout={self.dropout}")
