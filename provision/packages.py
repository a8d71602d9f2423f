"""The Debian package list (``scripts/debian-packages.txt``) and the programs the code runs.

The list is the one place that says which Debian packages robe-lab needs and who runs each
program; ``scripts/setup.sh`` installs from it. ``programs_in_code`` finds, in the project's own
Python files, the names of the programs they start, so that a test can fail when one is missing
from the list.
"""

from __future__ import annotations

import ast
import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from robe_lab.paths import project_root

PROJECT_ROOT = project_root()
PACKAGE_LIST = PROJECT_ROOT / "scripts" / "debian-packages.txt"
#: What ``make fresh-check`` needs on the host (a developer's and CI's tools, not a user's).
FRESH_CHECK_LIST = PROJECT_ROOT / "scripts" / "fresh-check-packages.txt"

#: Folders whose Python files run programs (the code and its tests).
CODE_FOLDERS = ("robe", "robe_lab", "topologies", "experiments", "webreplay", "analysis", "provision", "tests")

_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_PROGRAM = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")


class PackageListError(ValueError):
    """A line of the package list is malformed; the message names the file, line and problem."""


@dataclass(frozen=True)
class Entry:
    """One line of the list: the programs a package provides, and who runs them."""

    programs: tuple[str, ...]
    package: str
    used_by: str
    line: int


def read_package_list(path: Path = PACKAGE_LIST) -> list[Entry]:
    """Parse the list (``<program>[,<program>...] <package>  # who runs them``); errors name the line."""
    entries: list[Entry] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        text, _, comment = raw.partition("#")
        fields = text.split()
        if not fields:
            continue
        where = f"{path.name}:{number}"
        if len(fields) != 2:
            raise PackageListError(f"{where}: expected '<program>[,<program>...] <package>  # who', got {raw!r}")
        programs_field, package = fields
        if not _PACKAGE.match(package):
            raise PackageListError(f"{where}: package {package!r} is not a Debian package name")
        if package in seen:
            raise PackageListError(f"{where}: package {package!r} is already listed on line {seen[package]}")
        seen[package] = number
        programs = () if programs_field == "-" else tuple(programs_field.split(","))
        if not all(_PROGRAM.match(p) for p in programs):
            raise PackageListError(f"{where}: programs {programs_field!r}: names separated by ',' (or '-')")
        if not comment.strip():
            raise PackageListError(f"{where}: say who runs {package}'s programs in a '# ...' comment")
        entries.append(Entry(programs, package, comment.strip(), number))
    return entries


def listed_programs(entries: Iterable[Entry]) -> dict[str, str]:
    """Program -> the package listed for it."""
    return {program: entry.package for entry in entries for program in entry.programs}


def installed_packages(packages: Iterable[str]) -> set[str]:
    """Which of ``packages`` dpkg reports installed."""
    names = list(packages)
    shown = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Abbrev} ${Package}\n", *names],
                           capture_output=True, text=True, check=False).stdout  # fmt: skip
    return {line.split()[1] for line in shown.splitlines() if line.startswith("ii ") and len(line.split()) > 1}


def _first_string(node: ast.AST) -> str | None:
    if isinstance(node, ast.List) and node.elts:
        first = node.elts[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            return first.value
    return None


def _is_which_call(node: ast.AST) -> bool:
    """``shutil.which(...)`` or ``which(...)``."""
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    return (isinstance(func, ast.Attribute) and func.attr == "which") or (
        isinstance(func, ast.Name) and func.id == "which"
    )


def _strings(node: ast.AST) -> list[str]:
    if isinstance(node, ast.List | ast.Tuple | ast.Set):
        return [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return []


def candidate_programs(source: str) -> list[tuple[str, int]]:
    """Names that this Python source may run as programs, with their line numbers.

    - the first string of every list literal (an argv: ``["ip", "link", ...]``; the code builds
      argvs as lists, tuples are records such as ``("seq", int)``);
    - the string default of a parameter named ``executable`` or ``program``
      (``def dnsmasq_command(..., executable="dnsmasq")``);
    - the strings passed to ``shutil.which``, directly or through ``for tool in (...)``.

    Most candidates are not programs (``["delay", ...]``); the caller keeps those that are.
    """
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(source)):
        first = _first_string(node)
        if first is not None:
            found.append((first, node.lineno))  # type: ignore[attr-defined]
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            args = node.args
            positional = [*args.posonlyargs, *args.args]
            pairs = list(zip(positional[len(positional) - len(args.defaults) :], args.defaults, strict=True))
            pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is not None]
            for arg, default in pairs:
                named = arg.arg in ("executable", "program")
                if named and isinstance(default, ast.Constant) and isinstance(default.value, str):
                    found.append((default.value, default.lineno))
        if _is_which_call(node):
            assert isinstance(node, ast.Call)
            found += [(s, node.lineno) for s in _strings(ast.List(elts=node.args))]
        if isinstance(node, ast.For) and isinstance(node.target, ast.Name):
            loop_var = node.target.id
            calls_which = any(
                _is_which_call(inner) and any(isinstance(a, ast.Name) and a.id == loop_var for a in inner.args)  # type: ignore[attr-defined]
                for inner in ast.walk(node)
            )
            if calls_which:
                found += [(s, node.lineno) for s in _strings(node.iter)]
    return found


def python_files(root: Path = PROJECT_ROOT, folders: Iterable[str] = CODE_FOLDERS) -> list[Path]:
    """The project's Python files in ``folders``."""
    return sorted(p for folder in folders for p in (root / folder).rglob("*.py"))


def programs_in_code(files: Iterable[Path], root: Path = PROJECT_ROOT) -> dict[str, list[str]]:
    """Candidate program name -> where it appears (``path:line``), over ``files``."""
    where: dict[str, list[str]] = {}
    for path in files:
        for name, line in candidate_programs(path.read_text()):
            if _PROGRAM.match(name):
                where.setdefault(name, []).append(f"{path.relative_to(root)}:{line}")
    return where
