"""The endpoint library stands alone: nothing under robe/ imports the testbed (topologies/) or the
experiments (experiments/); robe_lab's shared modules import none of the project's packages."""

import ast
from pathlib import Path

from robe_lab.paths import project_root

ROOT = project_root()
SHARED = ("robe_lab/paths.py", "robe_lab/cliparse.py", "robe_lab/commands.py", "robe_lab/signals.py",
          "robe_lab/typedconfig.py", "robe_lab/records.py")  # fmt: skip


def imported_packages(path: Path) -> set[str]:
    """Top-level package of every import in a file (also imports inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_robe_imports_neither_topologies_nor_experiments():
    offenders = {str(p.relative_to(ROOT)): sorted(imported_packages(p) & {"topologies", "experiments", "analysis"})
                 for p in (ROOT / "robe").rglob("*.py")}  # fmt: skip
    assert not {k: v for k, v in offenders.items() if v}


def test_shared_modules_import_no_project_package():
    project = {"robe", "topologies", "experiments", "analysis", "webreplay", "provision"}
    for name in SHARED:
        assert not imported_packages(ROOT / name) & project, name
