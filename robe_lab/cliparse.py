"""Command-line parsers that read the same under ``robe-lab <command>`` and ``python -m <module>``.

Every command of the project builds its parser with ``command_parser``: the help shows each option's
default (unless the help text already states it, or there is none), docstring markup (``code``,
:func:`x`) is shown as plain text, and the program name is ``robe-lab <command>`` when the
``robe-lab`` command dispatched to it, else ``python -m <module>``.
"""

from __future__ import annotations

import argparse
import contextvars
import re
from collections.abc import Iterator
from contextlib import contextmanager

#: The program name a dispatched command shows (set by ``robe_lab.cli`` around the call).
_PROG: contextvars.ContextVar[str | None] = contextvars.ContextVar("robe_lab_prog", default=None)

_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``")


def plain(text: str) -> str:
    """reST inline markup as plain text: ````x```` and ``:role:`x``` -> ``x``."""
    return _LITERAL.sub(r"\1", _ROLE.sub(r"\1", text))


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, with defaults shown where they say something and no reST markup."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        quiet = (None, False, argparse.SUPPRESS)
        has_value = action.nargs != 0  # store_true and friends have no value to show
        if has_value and action.default not in quiet and action.default != [] and "default" not in text:
            text += " (default: %(default)s)"
        return plain(text)

    def _format_text(self, text: str) -> str:
        return super()._format_text(plain(text))


@contextmanager
def program_name(prog: str) -> Iterator[None]:
    """Within the block, parsers made by ``command_parser`` call themselves ``prog``."""
    token = _PROG.set(prog)
    try:
        yield
    finally:
        _PROG.reset(token)


def command_parser(module: str, doc: str | None, **kwargs: object) -> argparse.ArgumentParser:
    """The parser of ``python -m <module>`` with the first line of ``doc`` as its description."""
    description = (doc or "").strip().splitlines()[0] if doc else None
    return argparse.ArgumentParser(
        prog=_PROG.get() or f"python -m {module}",
        description=description,
        formatter_class=HelpFormatter,
        **kwargs,  # type: ignore[arg-type]
    )
