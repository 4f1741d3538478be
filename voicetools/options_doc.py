"""Rewrite the option tables of docs/configuration.md from the config classes.

    .venv/bin/voicestream-options-doc           # rewrite the generated blocks
    .venv/bin/voicestream-options-doc --check   # exit 1 with a diff when they are stale

Each option is declared once (balancer/config.py, worker/config.py, through
voicestream/options.py); its table is generated between markers:

    <!-- options:balancer -->
    | flag | env | default | meaning |
    ...
    <!-- /options:balancer -->

Everything outside the markers is left as written. tests/test_docs.py fails
when a block differs from what this tool would write.
"""
from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from balancer.config import BalancerConfig
from voicestream.options import markdown_table
from voicetools.paths import REPO
from worker.config import WorkerConfig

PROG = "voicestream-options-doc"
DOC = REPO / "docs" / "configuration.md"
# Block name -> the config class whose options it lists.
TABLES: dict[str, type] = {"balancer": BalancerConfig, "worker": WorkerConfig}


class MarkerError(ValueError):
    """A block's markers are missing or repeated."""


def block_pattern(name: str) -> re.Pattern[str]:
    """The block of name: group 1 is the opening marker, 2 the table, 3 the closing marker."""
    return re.compile(rf"(<!-- options:{name} -->\n)(.*?)(<!-- /options:{name} -->)", re.DOTALL)


def blocks(text: str) -> dict[str, str]:
    """The current content of every block in text, by name."""
    found: dict[str, str] = {}
    for name in TABLES:
        matches = block_pattern(name).findall(text)
        if len(matches) != 1:
            raise MarkerError(f"expected one '<!-- options:{name} -->' ... '<!-- /options:{name} -->' block, "
                              f"found {len(matches)}")
        found[name] = matches[0][1]
    return found


def render(text: str) -> str:
    """text with every block holding the table generated from its class."""
    blocks(text)  # every block present exactly once
    for name, cls in TABLES.items():
        opening, closing = f"<!-- options:{name} -->\n", f"<!-- /options:{name} -->"
        before, rest = text.split(opening, 1)
        text = before + opening + markdown_table(cls) + closing + rest.split(closing, 1)[1]
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG,
                                     description="Rewrite the generated option tables of docs/configuration.md.")
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 and print a diff when the tables are stale")
    parser.add_argument("--file", type=Path, default=DOC, help=f"the document (default: {DOC.relative_to(REPO)})")
    args = parser.parse_args(argv)
    current = args.file.read_text(encoding="utf-8")
    try:
        wanted = render(current)
    except MarkerError as exc:
        print(f"{args.file}: {exc}", file=sys.stderr)
        return 2
    if wanted == current:
        return 0
    if args.check:
        sys.stdout.writelines(difflib.unified_diff(current.splitlines(keepends=True), wanted.splitlines(keepends=True),
                                                   f"{args.file} (now)", f"{args.file} (generated)"))
        print(f"{args.file} is stale: run {PROG}", file=sys.stderr)
        return 1
    args.file.write_text(wanted, encoding="utf-8")
    print(f"rewrote the option tables in {args.file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
