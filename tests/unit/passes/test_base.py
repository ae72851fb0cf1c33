"""The step-pass interface: defaults do nothing; names are unique; one owner per role."""

import pytest
import torch

from draw_megatron.passes import StepOutput, StepPass, check_roles
from draw_megatron.passes.base import owner


class Observer(StepPass):
    name = "observer"


class LossOwner(StepPass):
    name = "loss_owner"
    owns_loss = True


class OtherLossOwner(StepPass):
    name = "other_loss"
    owns_loss = True


class MixOwner(StepPass):
    name = "mix_owner"
    owns_mixture = True


class OtherMixOwner(StepPass):
    name = "other_mix"
    owns_mixture = True


def test_default_hooks_do_nothing():
    p = StepPass()
    assert p.micro_loss(torch.zeros(2, 3), None) is None
    assert p.after_step(None) == StepOutput()
    assert p.initial_weights() is None
    assert p.state_dict() == {} and not p.owns_loss and not p.owns_mixture
    assert not p.stratified_batches


def test_owners_are_found():
    assert owner((), "owns_loss") is None
    loss, mix = LossOwner(), MixOwner()
    passes = (Observer(), loss, mix)
    check_roles(passes)
    assert owner(passes, "owns_loss") is loss and owner(passes, "owns_mixture") is mix


def test_two_owners_or_a_repeated_name_are_refused():
    with pytest.raises(ValueError, match=r"only one step pass may own the loss: loss_owner and "
                                         r"other_loss both do"):
        check_roles((LossOwner(), OtherLossOwner()))
    with pytest.raises(ValueError, match=r"only one step pass may own the mixture: mix_owner "
                                         r"and other_mix both do"):
        check_roles((MixOwner(), Observer(), OtherMixOwner()))
    with pytest.raises(ValueError, match=r"distinct names; repeated: \['observer'\]"):
        check_roles((Observer(), Observer()))
