"""The GPT with the document mask: each document of a packed sequence is processed as if it
were alone (exactly so with per-document positions), the model matches one whose attention
is an explicit masked softmax (outputs and gradients), and the config is checked."""

from __future__ import annotations

import pytest
import torch

from draw_megatron.config.base import ConfigError
from draw_megatron.model import GPT, attention
from draw_megatron.model.attention import document_ids
from draw_megatron.parallel import ParallelTopology
from tests.unit.model.test_attention import reference_attention
from tests.unit.model.tiny import EOS, document_batch, one_thread, tiny_config  # noqa: F401

SINGLE = ParallelTopology.single()


def document_model(**fields) -> GPT:
    cfg = tiny_config(attention_mask="document", eos_id=EOS, **fields)
    return GPT(cfg, SINGLE, seed=5).eval()


def use_reference_attention(monkeypatch) -> None:
    """Make every layer attend through the explicit masked softmax."""
    def reference(q, k, v, *, backend, dropout_p, mask=None):
        return reference_attention(q, k, v, mask.doc_ids_BT if mask is not None else None)
    monkeypatch.setattr(attention, "attention", reference)


def documents(tokens):
    """(row, start, end) of every document in ``tokens`` [B, T]."""
    spans = []
    for row, ids in enumerate(document_ids(tokens, EOS).tolist()):
        for doc in sorted(set(ids)):
            where = [t for t, i in enumerate(ids) if i == doc]
            spans.append((row, where[0], where[-1] + 1))
    return spans


@pytest.mark.parametrize("position_reset", [True, False])
def test_each_document_as_if_alone(position_reset):
    model = document_model(position_reset=position_reset)
    tokens, _ = document_batch(seed=1)
    spans = documents(tokens)
    assert len(spans) == 7 and any(end - start == 1 for _, start, end in spans)
    with torch.no_grad():
        packed = model(tokens)
        for row, start, end in spans:
            alone = model(tokens[row:row + 1, start:end])[0]
            if position_reset and end - start > 1:  # the same angles, the same keys
                assert torch.equal(packed[row, start:end], alone), (row, start, end)
            else:  # rotary scores depend on offsets only: equal up to rounding (and a
                # 1-token document takes another SDPA code path)
                torch.testing.assert_close(packed[row, start:end], alone, rtol=1e-5, atol=1e-5)
        _, cos, _ = model._positions(tokens)
        table = model.rotary(16, tokens.device)[0]
        if position_reset:  # per token: row 1's fourth document starts at 8
            assert cos.shape == (2, 16, 16) and torch.equal(cos[1, 8:], table[:8])
        else:
            assert torch.equal(cos, table)


@pytest.mark.parametrize("position_reset", [True, False])
def test_model_equals_masked_softmax_reference(monkeypatch, position_reset):
    tokens, labels = document_batch(seed=2)
    weights = torch.rand(tokens.shape, generator=torch.Generator().manual_seed(3))
    model = document_model(position_reset=position_reset, activation_checkpointing=True).train()
    with torch.no_grad():
        flex_logits = document_model(position_reset=position_reset,
                                     attention="flex")(tokens)
    loss = model(tokens, labels)
    (loss * weights).sum().backward()
    grads = {name: p.grad for name, p in model.named_parameters()}

    use_reference_attention(monkeypatch)
    ref = document_model(position_reset=position_reset).train()
    ref_loss = ref(tokens, labels)
    (ref_loss * weights).sum().backward()
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-5)
    for name, p in ref.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-5, atol=1e-6, msg=name)
    with torch.no_grad():
        torch.testing.assert_close(flex_logits, ref.eval()(tokens), rtol=1e-5, atol=1e-5)
        causal = GPT(tiny_config(), SINGLE, seed=5).eval()(tokens)
        assert not torch.allclose(causal, flex_logits, atol=1e-3)  # the mask does something


def test_document_config_errors():
    with pytest.raises(ConfigError, match="model.position_reset=true needs "
                                          "model.attention_mask=document"):
        tiny_config(position_reset=True)
    with pytest.raises(ConfigError, match=r"model.eos_id=300 must be in \[0, model.vocab_size"):
        tiny_config(eos_id=300)
    with pytest.raises(ValueError, match="model.attention_mask=document needs model.eos_id"):
        GPT(tiny_config(attention_mask="document"), SINGLE)
