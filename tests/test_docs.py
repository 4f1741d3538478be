"""The documentation agrees with the code: the option tables are the ones the
config classes generate, every flag --help prints is documented with its
environment variable (and every documented flag exists), and every relative
link in README.md and docs/ leads somewhere. No servers: --help runs as a
short subprocess."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from balancer.config import BalancerConfig
from voicestream.options import declared, markdown_table
from voicetools import options_doc
from worker.config import WorkerConfig

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CONFIGS: dict[str, type] = {"balancer": BalancerConfig, "worker": WorkerConfig}

# A table row as markdown_table writes it: | `--flag` | `ENV` | ...
TABLE_ROW = re.compile(r"^\| `(--[a-z0-9-]+)` \| `([A-Z0-9_]+)` \|", re.MULTILINE)
# An option in argparse's help starts an indented line: "  --port PORT", "  -h, --help".
HELP_OPTION = re.compile(r"^ {2}(?:-\w, )?(--[a-z0-9-]+)")
# Each option's help ends with "[ENV; default: ...]" (voicestream/options.py).
HELP_ENV = re.compile(r"\[([A-Z][A-Z0-9_]*); default:")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def documented_blocks() -> dict[str, str]:
    return options_doc.blocks(options_doc.DOC.read_text(encoding="utf-8"))


def help_text(package: str) -> str:
    # The options' own variables could make the parser refuse to start; a wide
    # terminal keeps each option's help on as few lines as possible.
    own = {opt.env for _, opt in declared(CONFIGS[package])}
    env = {k: v for k, v in os.environ.items() if k not in own} | {"COLUMNS": "200"}
    done = subprocess.run([sys.executable, "-m", package, "--help"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"python -m {package} --help failed:\n{done.stderr}"
    return done.stdout


def help_options(text: str) -> dict[str, str | None]:
    """flag -> the environment variable its help names (None if it names none)."""
    options: dict[str, str | None] = {}
    flag: str | None = None
    entry: list[str] = []

    def close() -> None:
        if flag is not None:
            env = HELP_ENV.search(" ".join(entry))
            options[flag] = env[1] if env else None

    for line in text.splitlines():
        start = HELP_OPTION.match(line)
        if start:
            close()
            flag, entry = start[1], [line]
        elif flag is not None and line.startswith("   "):  # a continuation of the entry's help
            entry.append(line)
        else:
            close()
            flag, entry = None, []
    close()
    options.pop("--help", None)
    return options


@pytest.mark.parametrize("name", CONFIGS)
def test_option_tables_are_generated_from_the_config(name: str) -> None:
    assert documented_blocks()[name] == markdown_table(CONFIGS[name]), (
        f"the {name} table in docs/configuration.md is stale: run voicestream-options-doc")


@pytest.mark.parametrize("name", CONFIGS)
def test_help_and_table_list_the_same_flags_and_variables(name: str) -> None:
    table = dict(TABLE_ROW.findall(documented_blocks()[name]))
    shown = help_options(help_text(name))
    assert len(shown) == len(declared(CONFIGS[name])), f"could not read every option from --help:\n{shown}"
    missing = {flag: env for flag, env in shown.items() if table.get(flag) != env}
    assert not missing, (f"flags --help prints that docs/configuration.md lacks (or lists with another variable): "
                         f"{missing}; run voicestream-options-doc")
    unknown = sorted(set(table) - set(shown))
    assert not unknown, f"flags docs/configuration.md lists that python -m {name} --help does not: {unknown}"


def test_options_doc_check_reports_a_stale_table_and_rewrite_fixes_it(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    doc = tmp_path / "configuration.md"
    prose = "# Configuration\n\nWritten by hand.\n"
    doc.write_text(f"{prose}<!-- options:balancer -->\n| stale |\n<!-- /options:balancer -->\n{prose}"
                   "<!-- options:worker -->\n<!-- /options:worker -->\n", encoding="utf-8")
    assert options_doc.main(["--check", "--file", str(doc)]) == 1
    assert "-| stale |" in capsys.readouterr().out
    assert "| stale |" in doc.read_text(encoding="utf-8"), "--check changed the file"
    assert options_doc.main(["--file", str(doc)]) == 0
    rewritten = doc.read_text(encoding="utf-8")
    assert options_doc.blocks(rewritten) == {name: markdown_table(cls) for name, cls in CONFIGS.items()}
    assert rewritten.count(prose) == 2, "text outside the markers changed"
    assert options_doc.main(["--check", "--file", str(doc)]) == 0


def test_options_doc_refuses_a_document_without_its_markers(tmp_path: Path) -> None:
    doc = tmp_path / "configuration.md"
    doc.write_text("# Configuration\n\n<!-- options:balancer -->\n<!-- /options:balancer -->\n", encoding="utf-8")
    assert options_doc.main(["--check", "--file", str(doc)]) == 2


def heading_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a document's headings: lower case, punctuation
    dropped, spaces as hyphens, "-1", "-2" ... for repeats."""
    anchors: set[str] = set()
    for title in re.findall(r"^#{1,6} +(.+?) *#*$", FENCE.sub("", markdown), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        anchor, n = slug, 0
        while anchor in anchors:
            n += 1
            anchor = f"{slug}-{n}"
        anchors.add(anchor)
    return anchors


def relative_links(path: Path) -> list[str]:
    return [target for target in LINK.findall(FENCE.sub("", path.read_text(encoding="utf-8")))
            if not re.match(r"[a-z][a-z0-9+.-]*:", target)]  # http:, https:, mailto: ...


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_files_and_headings_that_exist(path: Path) -> None:
    broken = []
    for target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and linked.suffix == ".md" and anchor not in heading_anchors(linked.read_text(encoding="utf-8")):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"broken links in {path.relative_to(ROOT)}: {broken}"


def test_every_document_is_linked_from_the_readme() -> None:
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in relative_links(ROOT / "README.md")}
    unlinked = [str(p.relative_to(ROOT)) for p in DOCS[1:] if p.resolve() not in linked]
    assert not unlinked, f"docs the README does not link: {unlinked}"
