"""The worker's imports run one way. Every import statement of every module
of worker/ counts - at the top, inside a function, under TYPE_CHECKING - as
the modules' source says it, resolved to the module it names:

- each module sits in one of LAYERS and imports only from its own layer or
  the ones below it (docs/architecture.md#layers says why this order);
- no folder imports a folder that imports it back, round any loop (a folder is
  a package of worker/; a module directly in worker/ counts as its own), and
  no module imports itself back through others;
- a third-party package named in CONFINED is imported only where it says:
  Flask only by the routes and the app, the database drivers only by the
  storage, the export tools (torch) only by worker/export/.

And a worker process never imports torch: every serving module imports and
runs with the export tools uninstalled."""
from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import worker
from speaker_helpers import EXPORT_TOOLS, uninstalled
from voicetools.paths import REPO

EXPORT_PACKAGE = "worker.export"

# Bottom to top: (name, modules and packages).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("storage", ("worker.storage",)),
    ("signal and metrics", ("worker.audio", "worker.vad", "worker.metrics")),
    ("speakers", ("worker.speakers",)),
    ("frames", ("worker.accounts", "worker.pipeline", "worker.held")),
    ("config", ("worker.config",)),
    ("context", ("worker.context",)),
    ("routes", ("worker.routes",)),
    ("entry points", ("worker.app", "worker.__main__", "worker.drain")),
    ("export tool", (EXPORT_PACKAGE,)),
)
# The export extra of pyproject.toml: what makes the ONNX graphs.
EXPORT_EXTRA = ("torch", "torchaudio", "speechbrain", "resemblyzer", "onnx", "onnxscript")
CONFINED: dict[str, tuple[str, ...]] = {
    "flask": ("worker.routes", "worker.app"),
    "werkzeug": ("worker.routes", "worker.app"),
    "gunicorn": ("worker.__main__",),
    "sqlite3": ("worker.storage",),
    "psycopg": ("worker.storage.postgres",),
    "psycopg_pool": ("worker.storage.postgres",),
    **{tool: (EXPORT_PACKAGE,) for tool in EXPORT_EXTRA},
}


def all_modules() -> list[str]:
    """Every module of worker/ but the (empty) package itself."""
    return sorted(m.name for m in pkgutil.walk_packages(worker.__path__, "worker."))


def serving_modules() -> list[str]:
    return sorted(["worker"] + [n for n in all_modules() if not within(n, EXPORT_PACKAGE)])


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


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


def first_party_imports(name: str, modules: list[str]) -> set[str]:
    """The modules of worker/ that module `name` imports (not itself)."""
    found = set()
    for imported in imported_names(module_path(name)):
        owners = [m for m in modules if within(imported, m)]
        if owners:
            found.add(max(owners, key=len))
    return found - {name}


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: first_party_imports(name, modules) for name in modules}


def layer_of(module: str) -> int | None:
    for index, (_, members) in enumerate(LAYERS):
        if any(within(module, member) for member in members):
            return index
    return None


def folder_of(module: str) -> str:
    """A module's folder: its package, or itself when it is one; a module
    directly in worker/ is a node of its own."""
    if module_path(module).name == "__init__.py" or module.count(".") == 1:
        return module
    return module.rpartition(".")[0]


def cycles(graph: dict[str, set[str]]) -> Iterator[list[str]]:
    """One cycle through each node that is on any (depth-first search)."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> Iterator[list[str]]:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                yield [*path[path.index(nxt):], nxt]
            elif nxt not in state:
                yield from visit(nxt)
        path.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            yield from visit(node)


def test_every_module_has_a_layer() -> None:
    assert {"worker.storage.sqlite", "worker.storage.postgres.frames", "worker.speakers.tracker",
            "worker.routes.speakers", "worker.export.onnx_export"} <= set(all_modules())
    assert [m for m in all_modules() if layer_of(m) is None] == []


def test_no_import_runs_up_the_layers() -> None:
    upward = [f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
              for module, targets in import_graph().items() for target in sorted(targets)
              if layer_of(module) is not None and layer_of(target) is not None and layer_of(target) > layer_of(module)]
    assert upward == []


def test_no_folder_imports_one_that_imports_it_back() -> None:
    folders: dict[str, set[str]] = {}
    for module, targets in import_graph().items():
        folders.setdefault(folder_of(module), set()).update(folder_of(t) for t in targets)
    for folder, targets in folders.items():
        targets.discard(folder)
    assert [" -> ".join(loop) for loop in cycles(folders)] == []


def test_no_module_imports_itself_back() -> None:
    assert [" -> ".join(loop) for loop in cycles(import_graph())] == []


def test_web_framework_database_drivers_and_torch_stay_where_they_belong() -> None:
    misplaced = []
    for module in all_modules():
        for package in sorted({name.partition(".")[0] for name in imported_names(module_path(module))}):
            allowed = CONFINED.get(package)
            if allowed is not None and not any(within(module, place) for place in allowed):
                misplaced.append(f"{module} imports {package} (only {', '.join(allowed)} may)")
    assert misplaced == []


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
    # A VAD-only worker opens no voiceprint store and no activity log.
    assert not (tmp_path / "vp.db").exists() and not (tmp_path / "activity.log").exists()
