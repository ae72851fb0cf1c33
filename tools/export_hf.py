#!/usr/bin/env python3
"""Export a trained model as a Hugging Face checkpoint: stock transformers classes, no custom
code, and a tokenizer that gives the same ids as our SentencePiece model.

RUN_DIR|MODEL is a run folder (its model.safetensors; the tokenizer is found through config.yaml's
data.root and its manifest.json) or a model.safetensors file (then pass --tokenizer).
The folder loads with AutoModelForCausalLM.from_pretrained(OUT) and
AutoTokenizer.from_pretrained(OUT). RMSNorm + SwiGLU exports as Llama, LayerNorm + GELU as
Starcoder2, LayerNorm + SwiGLU as StableLM, RMSNorm + GELU as Arcee.

Examples:
  python tools/export_hf.py runs/demo_cpu --out runs/demo_cpu/hf
  python tools/export_hf.py model.safetensors --tokenizer data/tokenizer.model --out hf --check
"""

from __future__ import annotations

import argparse
import sys

from draw_megatron.data.pile import BadInputLog, iter_documents

# Text that trips lossy tokenizers: indentation, tabs, runs of spaces, CRLF, rare scripts,
# SentencePiece's own "▁", and special-token spellings that must stay plain text.
CHECK_TEXT = ("def f(x):\n\tif x:\n\t\treturn  x   \n\n    \n  two  spaces\r\ncafé 日本語 😀 "
              "\u00a0\u3000 \u2581 a\u2581b \u2581\u2581 <s> </s> <unk> <0x41>")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", metavar="RUN_DIR|MODEL",
                   help="a run folder holding model.safetensors, or the .safetensors file")
    p.add_argument("--out", required=True, help="the Hugging Face folder to write")
    p.add_argument("--tokenizer", help="SentencePiece .model (default: the run's data root's)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--check", action="store_true",
                   help="then load the export and compare: logits on random sequences (fp32) "
                        "and tokenizer ids on a built-in text and the --check-corpus documents")
    p.add_argument("--check-corpus", nargs="*", default=[], metavar="FILE",
                   help="Pile jsonl(.zst) files whose documents --check tokenizes")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="--check fails above this max |logit difference| (default 1e-4)")
    return p


def check_export(out: str, source: str, tokenizer: str | None, corpus: list[str],
                 tolerance: float) -> int:
    """Print the comparison; 0 if it passes, 1 if not."""
    from draw_megatron.export.hf import model_file, run_tokenizer_path
    from draw_megatron.export.verify import (logits_max_abs_diff, random_tokens,
                                             tokenizer_mismatches)
    from draw_megatron.model.checkpoint_io import load_consolidated

    path = model_file(source)
    state, cfg = load_consolidated(path)
    tokens = random_tokens(cfg.vocab_size, 4, min(cfg.seq_len, 128))
    delta = logits_max_abs_diff(out, state, cfg, tokens)
    log = BadInputLog()
    texts = [CHECK_TEXT] + [text for _, text in iter_documents(corpus, log)]
    bad = tokenizer_mismatches(out, tokenizer or run_tokenizer_path(path), texts)
    print(f"logits: max |Δ| {delta:.3g} over {tuple(tokens.shape)} tokens (fp32, tolerance "
          f"{tolerance:g}); tokenizer: {len(texts) - len(bad)}/{len(texts)} texts give our ids"
          + (f"; skipped bad input: {log.describe()}" if log.total else ""))
    return 0 if delta <= tolerance and not bad else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from draw_megatron.export.hf import export_hf

    try:
        out = export_hf(args.source, args.out, tokenizer=args.tokenizer,
                        overwrite=args.overwrite)
        print(f"wrote {out}")
        if args.check:
            return check_export(out, args.source, args.tokenizer, args.check_corpus,
                                args.tolerance)
    except (ValueError, OSError) as exc:  # ExportError, a bad file: one line, no traceback
        print(f"export_hf: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
