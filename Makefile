# Two commands for a newcomer: `make demo` and `make test`. Each builds .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := demo_out
WORKERS ?= 2

.PHONY: venv test demo demo-clean gpu-wheels

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

PIPELINE := $(DEMO)/pipeline

# The DRAW pipeline with tiny models on CPU (tools/run_pipeline.py): reference -> proxy DRO ->
# posterior -> DRAW main run -> baselines -> comparison -> plots. Finished stages are skipped
# on a rerun; new data starts it afresh.
demo: $(DEMO)/data/manifest.json
	$(BIN)/python tools/data_summary.py --data $(DEMO)/data --mixture dirichlet --steps 40
	@if [ -d $(PIPELINE) ] && [ $(DEMO)/data/manifest.json -nt $(PIPELINE) ]; then \
		echo "the demo data changed: restarting the pipeline"; rm -rf $(PIPELINE); fi
	$(BIN)/python tools/run_pipeline.py --data $(DEMO)/data --proxy tiny-64 --main tiny-128 \
		--out $(PIPELINE)

demo-clean:
	rm -rf $(DEMO)

# Wheels for the lent GPU machine (no internet; its image lacks DeepSpeed and the MDS
# library): .whl/ travels with run(command="bash tools/gpu_check.sh", carry=[".whl"]).
GPU_WHEELS := hjson==3.1.0 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 \
	typing-inspection==0.4.5 streaming-community==0.14.2 zstandard==0.25.0 brotli==1.2.1 \
	catalogue==2.0.10 python-snappy==0.7.3 cramjam==2.14.0 zstd==1.5.6.1
gpu-wheels: $(STAMP)
	$(BIN)/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
		--implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
		--platform manylinux2014_x86_64 -d .whl $(GPU_WHEELS)
	$(BIN)/python -m pip wheel -q --no-deps deepspeed==0.19.8 -w .whl
