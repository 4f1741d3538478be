"""The tools as an installed package (voicetools/): every voicestream-*
command of pyproject.toml is the main() of a voicetools module and each tool
runs as python -m voicetools.<tool> under its command's name; the served
packages never import the tools; and no code finds the project by editing
sys.path (it is installed editable, scripts/ensure_venv.sh)."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from voicetools.paths import REPO

TOOLS = REPO / "voicetools"
SERVED = ("balancer", "worker", "voicestream")
COMMANDS: dict[str, str] = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
# Directories that hold no project code: the venv, caches, build and run output.
NOT_CODE = frozenset({"__pycache__", "build", "models", "bench-results", "logs"})


def python_files(root: Path) -> list[Path]:
    files = []
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = [d for d in subdirs if not d.startswith(".") and d not in NOT_CODE
                      and not d.endswith(".egg-info")]
        files += [Path(directory, name) for name in names if name.endswith(".py")]
    return sorted(files)


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_path(name: str) -> Path:
    relative = Path(*name.split("."))
    package = REPO / relative / "__init__.py"
    return package if package.is_file() else REPO / relative.with_suffix(".py")


def tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


def top_level_functions(path: Path) -> set[str]:
    return {node.name for node in tree(path).body if isinstance(node, ast.FunctionDef)}


def tool_module(target: str) -> str:
    """voicetools.bench.run:main -> voicetools.bench: what python -m runs."""
    return ".".join(target.partition(":")[0].split(".")[:2])


def test_every_command_is_the_main_of_the_tool_it_is_named_after() -> None:
    assert len(COMMANDS) >= 13
    for command, target in COMMANDS.items():
        module, _, function = target.partition(":")
        assert function == "main" and module.startswith("voicetools."), (command, target)
        assert command == "voicestream-" + tool_module(target).removeprefix("voicetools.").replace("_", "-")
        assert "main" in top_level_functions(module_path(module)), f"{command}: {module} has no main()"


def test_every_tool_has_a_command() -> None:
    """A module of voicetools with a main() is a tool: it is in [project.scripts]."""
    mains = {module_name(path) for path in python_files(TOOLS) if "main" in top_level_functions(path)}
    assert mains == {target.partition(":")[0] for target in COMMANDS.values()}
    for target in COMMANDS.values():
        module = tool_module(target)
        if (REPO / Path(*module.split("."))).is_dir():
            assert (REPO / Path(*module.split(".")) / "__main__.py").is_file(), f"python -m {module} runs nothing"


def test_no_code_touches_sys_path() -> None:
    found = []
    for path in python_files(REPO):
        for node in ast.walk(tree(path)):
            attribute = (isinstance(node, ast.Attribute) and node.attr == "path"
                         and isinstance(node.value, ast.Name) and node.value.id == "sys")
            imported = isinstance(node, ast.ImportFrom) and node.module == "sys" and \
                any(alias.name == "path" for alias in node.names)
            if attribute or imported:
                found.append(f"{path.relative_to(REPO)}:{getattr(node, 'lineno', '?')}")
    assert not found, f"sys.path used at {', '.join(found)}: install the project instead (pip install -e .)"


def test_the_served_packages_never_import_the_tools() -> None:
    """A runtime install (pip install .) needs none of the tools' extras."""
    for package in SERVED:
        for path in python_files(REPO / package):
            for node in ast.walk(tree(path)):
                names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                assert not [n for n in names if n.partition(".")[0] == "voicetools"], \
                    f"{path.relative_to(REPO)}:{node.lineno} imports the tools"


@pytest.mark.integration
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_tool_runs_as_a_module_under_its_command_name(command: str) -> None:
    done = subprocess.run([sys.executable, "-m", tool_module(COMMANDS[command]), "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: {command} "), done.stdout[:200]
