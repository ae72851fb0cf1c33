"""The GPT at tp = 1: parameter layout, maths against a naive reference, training, recompute."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from draw_megatron.config.model import count_parameters
from draw_megatron.model import GPT, num_parameters
from draw_megatron.model.checkpoint_io import expected_shapes, full_state_dict
from draw_megatron.parallel import ParallelTopology
from tests.unit.model.tiny import VOCAB, batch, one_thread, tiny_config  # noqa: F401

SINGLE = ParallelTopology.single()
VARIANTS = [dict(mlp=mlp, tie_embeddings=tie, norm=norm)
            for mlp in ("gelu", "swiglu") for tie in (True, False)
            for norm in ("layernorm", "rmsnorm")]


@pytest.mark.parametrize("fields", VARIANTS, ids=lambda f: "-".join(map(str, f.values())))
def test_parameter_layout_matches_count_parameters(fields):
    cfg = tiny_config(**fields)
    model = GPT(cfg, SINGLE)
    counts = count_parameters(cfg)
    assert sum(p.numel() for p in model.parameters()) == counts["total"]
    assert num_parameters(model) == counts["total"]
    assert num_parameters(model, non_embedding=True) == counts["non_embedding"]
    assert {n: tuple(p.shape) for n, p in model.named_parameters()} == expected_shapes(cfg)


def _naive_forward(state: dict, cfg, tokens):
    """Plain-torch logits [B, T, V] from full tensors: explicit mask, complex-number rotary."""
    d, n_heads, hd = cfg.d_model, cfg.n_heads, cfg.head_dim
    bsz, seq = tokens.shape

    def norm(x, prefix):
        if cfg.norm == "layernorm":
            mu, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
            return (x - mu) / torch.sqrt(var + cfg.norm_eps) * state[f"{prefix}.weight"] \
                + state[f"{prefix}.bias"]
        return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + cfg.norm_eps) \
            * state[f"{prefix}.weight"]

    freqs = cfg.rotary_base ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    phase = torch.polar(torch.ones(seq, hd // 2, dtype=torch.float64),
                        torch.outer(torch.arange(seq, dtype=torch.float64), freqs))

    def rotate(x):  # pairs (i, i + hd/2) as complex numbers
        z = torch.complex(x[..., : hd // 2].double(), x[..., hd // 2:].double())
        z = z * phase[None, :, None, :]
        return torch.cat([z.real, z.imag], dim=-1).float()

    x = state["embedding.weight"][tokens]
    mask = torch.ones(seq, seq, dtype=torch.bool).tril()
    for i in range(cfg.n_layers):
        p = f"blocks.{i}"
        q, k, v = (norm(x, f"{p}.attn_norm") @ state[f"{p}.attention.qkv.weight"].T).split(d, -1)
        q, k, v = (t.view(bsz, seq, n_heads, hd) for t in (q, k, v))
        q, k = rotate(q), rotate(k)
        scores = torch.einsum("bshd,bthd->bhst", q, k) / math.sqrt(hd)
        probs = scores.masked_fill(~mask, float("-inf")).softmax(-1)
        attn = torch.einsum("bhst,bthd->bshd", probs, v).reshape(bsz, seq, d)
        x = x + attn @ state[f"{p}.attention.proj.weight"].T
        h = norm(x, f"{p}.mlp_norm")
        if cfg.mlp == "swiglu":
            gate, up = (h @ state[f"{p}.mlp.gate_up.weight"].T).chunk(2, -1)
            h = F.silu(gate) * up
        else:
            h = F.gelu(h @ state[f"{p}.mlp.up.weight"].T)
        x = x + h @ state[f"{p}.mlp.down.weight"].T
    head = state["embedding.weight" if cfg.tie_embeddings else "head.weight"]
    return norm(x, "final_norm") @ head.T


@pytest.mark.parametrize("fields", [VARIANTS[0], VARIANTS[-1]],
                         ids=lambda f: "-".join(map(str, f.values())))
def test_forward_matches_naive_reference(fields):
    cfg = tiny_config(**fields)
    model = GPT(cfg, SINGLE, seed=1)
    with torch.no_grad():  # random norms, so their placement matters
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(1.0 if name.endswith("weight") else 0.0, 0.3)
    tokens, labels = batch()
    logits = model(tokens)
    assert logits.shape == (2, 16, 384)
    want = _naive_forward(full_state_dict(model, SINGLE), cfg, tokens)
    torch.testing.assert_close(logits, want, rtol=1e-4, atol=1e-4)
    # Padded ids are masked: the loss is cross-entropy over the real vocabulary only.
    loss = model(tokens, labels)
    assert loss.shape == (2, 16) and loss.dtype == torch.float32
    want_loss = F.cross_entropy(want[..., :VOCAB].flatten(0, 1), labels.flatten(),
                                reduction="none").view(2, 16)
    torch.testing.assert_close(loss, want_loss, rtol=1e-4, atol=1e-4)


def test_initial_loss_is_near_uniform_and_causal():
    cfg = tiny_config()
    model = GPT(cfg, SINGLE)
    tokens, labels = batch()
    with torch.no_grad():
        assert abs(model(tokens, labels).mean().item() - math.log(VOCAB)) < 0.1
        changed = tokens.clone()
        changed[:, 10:] = (changed[:, 10:] + 1) % VOCAB
        torch.testing.assert_close(model(changed)[:, :10], model(tokens)[:, :10])
        assert not torch.allclose(model(changed)[:, 10:], model(tokens)[:, 10:])


def test_loss_decreases_with_adam():
    torch.manual_seed(0)
    model = GPT(tiny_config(mlp="swiglu", tie_embeddings=False), SINGLE)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    tokens, labels = batch()
    losses = []
    for _ in range(15):
        loss = model(tokens, labels).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def _loss_and_grads(model, tokens, labels, weights):
    loss = model(tokens, labels)
    (loss * weights).sum().backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_activation_checkpointing_gives_same_loss_and_grads():
    tokens, labels = batch()
    weights = torch.rand(tokens.shape, generator=torch.Generator().manual_seed(1))
    plain = GPT(tiny_config(), SINGLE, seed=4)
    recompute = GPT(tiny_config(activation_checkpointing=True), SINGLE, seed=4)
    loss_a, grads_a = _loss_and_grads(plain, tokens, labels, weights)
    loss_b, grads_b = _loss_and_grads(recompute, tokens, labels, weights)
    torch.testing.assert_close(loss_b, loss_a, rtol=0, atol=0)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-6, atol=1e-8,
                                   msg=lambda m, n=name: f"{n}: {m}")
    # Non-reentrant: autograd.grad works through it (what the DGA pass uses under ZeRO).
    params = list(recompute.parameters())
    grads = torch.autograd.grad((recompute(tokens, labels) * weights).sum(), params)
    torch.testing.assert_close(grads[0], grads_a["embedding.weight"], rtol=1e-6, atol=1e-8)


def test_dropout_only_in_training():
    tokens, _ = batch()
    model = GPT(tiny_config(dropout=0.3), SINGLE, seed=2)
    reference = GPT(tiny_config(), SINGLE, seed=2)
    model.eval()
    torch.testing.assert_close(model(tokens), reference(tokens), rtol=0, atol=0)
    model.train()
    assert not torch.allclose(model(tokens), reference(tokens))


def test_input_validation():
    model = GPT(tiny_config(), SINGLE)
    tokens, labels = batch()
    with pytest.raises(ValueError, match="labels .* must have the tokens' shape"):
        model(tokens, labels[:, :-1])
    with pytest.raises(ValueError, match="integer ids"):
        model(tokens.float())
    with pytest.raises(ValueError, match=r"model.n_heads=4 must be divisible by the "
                                         r"tensor-parallel size 3"):
        GPT(tiny_config(), _Fake(3))


class _Fake:
    """A topology stand-in with tp_size only (no process groups needed to fail early)."""

    def __init__(self, tp_size: int) -> None:
        self.tp_size, self.tp_group = tp_size, None


def test_tied_head_declares_its_external_parameter():
    tied = GPT(tiny_config(), SINGLE, device="meta")
    assert tied.external_parameters() == [(tied, tied.embedding.weight)]
    assert GPT(tiny_config(tie_embeddings=False), SINGLE, device="meta").external_parameters() == []
