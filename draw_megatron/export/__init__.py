"""Export to other ecosystems: a Hugging Face ``transformers`` folder (``hf.py``)."""

from draw_megatron.export.hf import ExportError, export_hf

__all__ = ["ExportError", "export_hf"]
