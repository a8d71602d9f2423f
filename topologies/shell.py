"""The command helper under its older name: see ``robe_lab.commands`` (where ``robe/`` finds it too)."""

from robe_lab.commands import CommandError, in_netns, run, wait_readable

__all__ = ["CommandError", "in_netns", "run", "wait_readable"]
