"""A worker process never imports torch: every serving module imports and
runs with the export tools uninstalled, and none names them, not even inside
a function. Only worker/speakers/export/ may."""
from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import worker
from speaker_helpers import EXPORT_TOOLS, uninstalled
from voicetools.paths import REPO

EXPORT_PACKAGE = "worker.speakers.export"


def serving_modules() -> list[str]:
    names = [m.name for m in pkgutil.walk_packages(worker.__path__, "worker.")]
    return sorted(["worker"] + [n for n in names if n != EXPORT_PACKAGE and not n.startswith(EXPORT_PACKAGE + ".")])


def module_path(name: str) -> Path:
    relative = Path(*name.split("."))
    package = REPO / relative / "__init__.py"
    return package if package.is_file() else REPO / relative.with_suffix(".py")


def imported_names(path: Path) -> set[str]:
    """Every module an import statement of the file names, at any depth."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the file's package
                parts = path.parent.relative_to(REPO).parts
                package = parts[:len(parts) - node.level + 1]
                base = ".".join([*package, base] if base else package)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def test_the_serving_modules_are_all_there() -> None:
    modules = serving_modules()
    assert {"worker.app", "worker.context", "worker.vad", "worker.routes.frames", "worker.speakers.graphs",
            "worker.speakers.loader", "worker.speakers.engine", "worker.speakers.routes"} <= set(modules)
    assert not [m for m in modules if m.startswith(EXPORT_PACKAGE)]


def test_no_serving_module_names_torch_or_the_export_tools() -> None:
    for name in serving_modules():
        names = imported_names(module_path(name))
        bad = {n for n in names if n.partition(".")[0] in EXPORT_TOOLS or n.startswith(EXPORT_PACKAGE)}
        assert not bad, f"{name} imports {sorted(bad)}"


def test_every_serving_module_runs_without_the_export_tools(tmp_path: Path) -> None:
    code = uninstalled(*EXPORT_TOOLS) + (
        "import importlib, json\n"
        f"for name in {serving_modules()!r}:\n"
        "    importlib.import_module(name)\n"
        "from worker.app import create_app\n"
        "from worker.config import WorkerConfig\n"
        f"root = {str(tmp_path)!r}\n"
        "app = create_app(WorkerConfig(encoder='none', log_dir=root + '/logs', store_path=root + '/vp.db',\n"
        "                              activity_log=root + '/activity.log'))\n"
        "client = app.test_client()\n"
        "health = client.get('/health').get_json()\n"
        "refused = client.post('/embed', data=b'RIFF')\n"
        "loaded = sorted(m for m in sys.modules if m.partition('.')[0] in HIDDEN)\n"
        "print(json.dumps({'health': health, 'embed': refused.status_code, 'loaded': loaded}))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["loaded"] == []
    assert result["health"]["torch_loaded"] is False and result["health"]["status"] == "ok"
    assert result["embed"] == 503
