"""Step passes that plug into the trainer's step, chosen by the config's ``passes`` list:
the proxy DRO (``dro``), DGA (``dga``), its observing ``alignment_monitor``, online DRAW's
DRO evidence (``dro_evidence``) and the ODM bandit (``odm``). The interface is
``base.StepPass``; ``registry`` maps names to config sections."""

from draw_megatron.passes.base import (PassConfig, PassContext, StepInfo, StepOutput, StepPass,
                                       check_roles)

__all__ = ["PassConfig", "PassContext", "StepInfo", "StepOutput", "StepPass", "check_roles"]
