"""Scoped clean-up recognises only robe-lab's processes."""

from topologies.cleanup import is_ours


def test_our_mininet_shell_is_ours():
    assert is_ours(["bash", "--norc", "--noediting", "-is", "mininet:rl-3f2c1a-client"])


def test_tagged_helper_is_ours():
    assert is_ours(["/x/python", "-m", "topologies.tapwire", "--tag", "rl-3f2c1a-p1-a1"])


def test_other_people_are_not_ours():
    assert not is_ours(["bash", "--norc", "-is", "mininet:h1"])
    assert not is_ours(["python", "--tag", "other-thing"])
    assert not is_ours(["python", "rl-3f2c1a"])
    assert not is_ours([])
