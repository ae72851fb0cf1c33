"""The step-pass interface: defaults do nothing; names are unique; one loss owner at most."""

import pytest
import torch

from draw_megatron.passes import StepPass, check_passes


class Observer(StepPass):
    name = "observer"


class Owner(StepPass):
    name = "owner"
    owns_loss = True


class OtherOwner(StepPass):
    name = "other"
    owns_loss = True


def test_default_hooks_do_nothing():
    p = StepPass()
    assert p.micro_loss(torch.zeros(2, 3), None) is None
    assert p.after_step(None, 0, None, None, None) == []
    assert p.state_dict() == {} and not p.owns_loss and not p.stratified_batches


def test_the_loss_owner_is_found():
    assert check_passes(()) is None
    assert check_passes((Observer(),)) is None
    owner = Owner()
    assert check_passes((Observer(), owner)) is owner


def test_two_owners_or_a_repeated_name_are_refused():
    with pytest.raises(ValueError, match=r"only one step pass may own the loss.*'owner', 'other'"):
        check_passes((Owner(), OtherOwner()))
    with pytest.raises(ValueError, match=r"distinct names; repeated: \['observer'\]"):
        check_passes((Observer(), Observer()))
