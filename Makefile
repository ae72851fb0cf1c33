# Two commands for a newcomer: `make demo` and `make test`. Each builds .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := demo_out
WORKERS ?= 2

.PHONY: venv test demo demo-clean

$(STAMP): setup.py constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

$(DEMO)/corpus/SUMMARY.json: $(STAMP) tools/make_demo_corpus.py
	$(BIN)/python tools/make_demo_corpus.py --out $(DEMO)/corpus --overwrite

$(DEMO)/tokenizer/sp.model: $(DEMO)/corpus/SUMMARY.json
	$(BIN)/python tools/train_tokenizer.py --input '$(DEMO)/corpus/train/*.jsonl.zst' \
		--vocab-size 8000 --out $(DEMO)/tokenizer/sp

$(DEMO)/data/manifest.json: $(DEMO)/tokenizer/sp.model
	$(BIN)/python tools/convert_pile.py $(DEMO)/corpus --tokenizer $(DEMO)/tokenizer/sp.model \
		--seq-len 256 --workers $(WORKERS) --out $(DEMO)/data --overwrite

DEMO_RUN := runs/demo_cpu

# A new data root or config starts the run afresh; otherwise a rerun resumes (or just exports).
$(DEMO_RUN)/model.safetensors: $(DEMO)/data/manifest.json configs/experiments/demo_cpu.yaml
	rm -rf $(DEMO_RUN)
	DS_ACCELERATOR=cpu $(BIN)/deepspeed --num_gpus 2 launch/pretrain_main.py \
		--config configs/experiments/demo_cpu.yaml run.dir=$(DEMO_RUN)

demo: $(DEMO)/data/manifest.json
	$(BIN)/python tools/data_summary.py --data $(DEMO)/data --mixture dirichlet --steps 40
	$(MAKE) $(DEMO_RUN)/model.safetensors
	$(BIN)/python tools/compare_runs.py $(DEMO_RUN) --out $(DEMO_RUN)

demo-clean:
	rm -rf $(DEMO) $(DEMO_RUN)
