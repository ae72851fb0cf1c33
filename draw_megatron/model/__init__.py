"""The GPT model: architecture (``gpt``, ``attention``, ``rotary``), TP-independent
initialisation (``init``), full-tensor export and the consolidated file (``checkpoint_io``),
and parameter / FLOP counts (``stats``)."""

from draw_megatron.model.attention import select_backend
from draw_megatron.model.checkpoint_io import FILENAME as CONSOLIDATED_NAME
from draw_megatron.model.checkpoint_io import (full_state_dict, load_consolidated,
                                               load_consolidated_into, load_full_state_dict,
                                               save_consolidated)
from draw_megatron.model.gpt import GPT
from draw_megatron.model.stats import flops_per_token, num_parameters

__all__ = [
    "CONSOLIDATED_NAME", "GPT", "flops_per_token", "full_state_dict", "load_consolidated", "load_consolidated_into",
    "load_full_state_dict", "num_parameters", "save_consolidated", "select_backend",
]
