"""Step passes that plug into the trainer's step: the DRO proxy update (``dro``); the
interface is ``base.StepPass``."""

from draw_megatron.passes.base import StepPass, check_passes

__all__ = ["StepPass", "check_passes"]
