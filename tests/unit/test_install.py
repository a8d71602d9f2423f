"""``pip install .`` into a fresh venv: every package and subpackage imports from the installed copy,
profiles come with it, the ``robe-lab`` command works; pyproject's dependencies match the lock."""

import re
import shutil
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest

from robe_lab.paths import project_root

ROOT = project_root()
TOP_LEVEL = ("robe", "robe_lab", "topologies", "experiments", "analysis", "webreplay", "provision")


def every_package() -> list[str]:
    """Every package of the checkout (folders with __init__.py under the top-level packages)."""
    names = []
    for top in TOP_LEVEL:
        for init in sorted((ROOT / top).rglob("__init__.py")):
            names.append(".".join(init.parent.relative_to(ROOT).parts))
    return names


def test_every_package_is_found():
    assert {"robe.protocol", "robe.proxy"} <= set(every_package())


@pytest.mark.slow
def test_pip_install_into_a_fresh_venv_imports_every_package(tmp_path):
    target = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=True).create(target)
    python = target / "bin" / "python"
    # The pinned dependencies are this .venv's (the test is about the package, not about PyPI):
    # a .pth puts its site-packages after the fresh venv's own.
    ours = next(Path(p) for p in sys.path if p.endswith("site-packages") and Path(p).is_relative_to(sys.prefix))
    site = Path(subprocess.check_output([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                        text=True).strip())  # fmt: skip
    (site / "zz-robe-lab-test-deps.pth").write_text(f"{ours}\n")
    # From a copy of the sources: setuptools writes build/ and *.egg-info next to them.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv", ".git", "results", "corpus", "build",
                                                                 "*.egg-info", "__pycache__", ".*_cache"))  # fmt: skip
    pip = [str(python), "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check", str(source)]
    done = subprocess.run(pip, capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    check = f"""
import importlib, json, pathlib
site = pathlib.Path({str(site)!r})
for name in {every_package()!r}:
    module = importlib.import_module(name)
    assert pathlib.Path(module.__file__).is_relative_to(site), (name, module.__file__)
from experiments.profile import load_profile
from experiments.profile2 import load_profile2
print(load_profile("quick").name, load_profile2("quick").name)
"""
    imported = subprocess.run([str(python), "-c", check], capture_output=True, text=True, timeout=300, check=False,
                              cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "ROBE_LAB_ROOT": str(ROOT)})  # fmt: skip
    assert imported.returncode == 0, imported.stderr[-3000:]
    assert imported.stdout.split() == ["quick", "quick"]
    helped = subprocess.run([str(target / "bin" / "robe-lab"), "--help"], capture_output=True, text=True,
                            timeout=120, check=False, cwd=tmp_path)  # fmt: skip
    assert helped.returncode == 0 and "experiment2" in helped.stdout


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[;]", requirement.strip(), maxsplit=1)[0].lower()


def test_pyproject_dependencies_match_the_lock():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {_name(r) for r in project["dependencies"]}
    dev = {_name(r) for r in project["optional-dependencies"]["dev"]}
    lock = {_name(line) for line in (ROOT / "requirements.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")}  # fmt: skip
    assert runtime | dev | {"setuptools"} == lock
    assert not runtime & dev
    assert project["scripts"]["robe-lab"] == "robe_lab.cli:main"
