"""The step passes a run can list in ``passes:``, by name.

Each entry names the pass's config section class ("module:Class"), a
:class:`~draw_megatron.passes.base.PassConfig` whose ``PASS`` is the pass. The section of
every registered pass exists in every run config (``<name>.<key>=value`` overrides work
whether or not the pass is on); only the listed passes are checked and built. A new pass is
one file and one line here (docs/architecture.md, "Adding a mixing algorithm").
"""

from __future__ import annotations

import functools
import importlib
from typing import TYPE_CHECKING

from draw_megatron.config.base import ConfigError, suggest

if TYPE_CHECKING:
    from draw_megatron.config.run import RunConfig
    from draw_megatron.data.manifest import Manifest
    from draw_megatron.passes.base import PassConfig, StepPass

PASSES: dict[str, str] = {
    "dro": "draw_megatron.passes.dro:DROConfig",
    "dga": "draw_megatron.passes.dga:DGAConfig",
    "alignment_monitor": "draw_megatron.passes.dga:AlignmentMonitorConfig",
    "dro_evidence": "draw_megatron.passes.dro_evidence:DROEvidenceConfig",
    "odm": "draw_megatron.passes.odm:ODMConfig",
    "lm_eval": "draw_megatron.passes.lm_eval:LMEvalConfig",
}


@functools.cache
def section_classes() -> dict[str, type[PassConfig]]:
    """Pass name → its config section class (imported on first use)."""
    out = {}
    for name, target in PASSES.items():
        module, _, cls_name = target.partition(":")
        cls = getattr(importlib.import_module(module), cls_name)
        if cls.SECTION != name or cls.PASS.name != name:
            raise RuntimeError(f"pass registry entry {name!r} points to {target} whose section "
                               f"is {cls.SECTION!r} and pass {cls.PASS.name!r}")
        out[name] = cls
    return out


def check_names(names: list[str], key: str = "passes") -> None:
    """ConfigError for a name no registry entry has (with the closest one)."""
    for i, name in enumerate(names):
        if name not in PASSES:
            raise ConfigError(f"{key}[{i}]={name!r} is not a step pass{suggest(name, PASSES)}; "
                              f"known: {', '.join(PASSES)}")


def check_passes(run_cfg: RunConfig, manifest: Manifest) -> None:
    """Every check of the run's pass list that needs no process group: known names, at most
    one owner of the loss and of the mixture (both named), an online mixture kind only with
    a mixture owner, and each pass's own ``check``."""
    from draw_megatron.mixture.kinds import KINDS
    from draw_megatron.passes.base import check_roles

    names = run_cfg.active_passes
    check_names(names)
    classes = section_classes()
    try:
        check_roles([classes[n].PASS for n in names])
    except ValueError as exc:
        raise ConfigError(f"passes={names}: {exc}") from None
    kind = run_cfg.mixture.kind
    if KINDS[kind].online and not any(classes[n].PASS.owns_mixture for n in names):
        owners = [n for n, c in classes.items() if c.PASS.owns_mixture]
        raise ConfigError(f"mixture.kind={kind} is set by a pass, but passes={names} has none "
                          f"that sets the mixture (one of {', '.join(owners)})")
    for name in names:
        run_cfg.section(name).check(run_cfg, manifest)


def build_passes(run_cfg: RunConfig) -> list[StepPass]:
    """The run's passes, in the order listed (implied ones last)."""
    return [run_cfg.section(name).build(run_cfg) for name in run_cfg.active_passes]
