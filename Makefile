# Two commands for a newcomer: `make demo` and `make test`. Each builds .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := demo_out
WORKERS ?= 2

.PHONY: venv test demo demo-clean gpu-wheels dga-clusters

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
# posterior -> DRAW main run -> baselines -> a DGA run toward the Python Docs test split ->
# comparison -> plots. Finished stages are skipped
# on a rerun; new data starts it afresh.
demo: $(DEMO)/data/manifest.json
	$(BIN)/python tools/data_summary.py --data $(DEMO)/data --mixture dirichlet --steps 40
	@if [ -d $(PIPELINE) ] && [ $(DEMO)/data/manifest.json -nt $(PIPELINE) ]; then \
		echo "the demo data changed: restarting the pipeline"; rm -rf $(PIPELINE); fi
	$(BIN)/python tools/run_pipeline.py --data $(DEMO)/data --proxy tiny-64 --main tiny-128 \
		--out $(PIPELINE) --dga-specific "test:Python Docs" --dga-every 10

DGA := $(DEMO)/dga4096

# The inputs of DGA distribution reweighting on the demo corpus (DGA paper §3.2): 64 x 64 =
# 4,096 embedding clusters of 300-character chunks as domains (tools/cluster_domains.py), their
# data at a short seq_len so most clusters hold sequences, and the importance-sampling basis:
# the 8 demo domains plus the specific set, Python Docs' test documents (basis.json), and
# that set's histogram as the IS baseline (importance_sampling.json). Then the DGA run over
# those 9 bases toward Python Docs' test documents (configs/experiments/dga_clusters_cpu.yaml).
dga-clusters: $(DEMO)/tokenizer/sp.model
	$(BIN)/python tools/cluster_domains.py $(DEMO)/corpus --k 64 --levels 2 --chunk-chars 300 \
		--out $(DGA)/corpus --overwrite
	$(BIN)/python tools/convert_pile.py $(DGA)/corpus --tokenizer $(DEMO)/tokenizer/sp.model \
		--seq-len 64 --workers $(WORKERS) --shard-size 1mb --out $(DGA)/data --overwrite
	$(BIN)/python tools/importance_histograms.py --clusters $(DGA)/corpus \
		--basis-from-clustered $(DGA)/corpus/train \
		--specific 'Python Docs (test)=$(DEMO)/corpus/test.jsonl.zst' \
		--specific-domain 'Python Docs' --include-specific --data $(DGA)/data \
		--out $(DGA)/basis --overwrite
	$(BIN)/python tools/select_documents.py $(DEMO)/corpus/test.jsonl.zst --domain 'Python Docs' \
		--out $(DGA)/specific/python_docs_test.jsonl --overwrite
	rm -rf $(DGA)/runs
	DS_ACCELERATOR=cpu $(BIN)/deepspeed --num_gpus 2 launch/dga_align.py \
		--config configs/experiments/dga_clusters_cpu.yaml

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
