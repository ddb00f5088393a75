"""Regenerate ``benchmarks/RESULTS.md`` (and its plots) and the README's generated blocks from the stored records.

    .venv/bin/python -m benchmarks.report

The page is the accuracy grid's tables (``benchmarks.accuracy.tables``), then the sections of the studies built on
the grid's cells (``lelp tune``, ``lelp active``, ``lelp search``). The README quotes records in blocks between
``<!-- results:<name>:begin -->`` and ``<!-- results:<name>:end -->``, rewritten here, so its prose cannot drift
from the records. This module lives at the top of the package because it reads every benchmark: no benchmark
imports it, so there is no import cycle.
"""

from __future__ import annotations

import re
import textwrap

from benchmarks.accuracy import spec, tables
from benchmarks.active import accuracy_vs_queries
from benchmarks.search import layernas_vs_samplers
from benchmarks.teachers import labels_only
from benchmarks.throughput import fit_breakdown
from benchmarks.tune import tune_vs_grid

README = spec.REPO / "README.md"


def results_page(seeds: int = 3) -> str:
    """RESULTS.md's text."""
    lines = tables.page(seeds)
    for study in (tune_vs_grid, accuracy_vs_queries, layernas_vs_samplers, labels_only):
        lines += study.section()
    return "\n".join(lines)


def readme_blocks() -> dict[str, str]:
    """Name → the text of the README block of that name, wrapped as the README is."""
    blocks = {"quickstart": fit_breakdown.summary(), "accuracy": tables.summary(), "static": tables.static_summary(),
              "transformer": tables.transformer_summary(),
              "tune": tune_vs_grid.summary()}
    return {name: textwrap.fill(text, 115, break_long_words=False, break_on_hyphens=False)
            for name, text in blocks.items()}


def block_pattern(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- results:{name}:begin[^>]*-->\n)(.*?)(<!-- results:{name}:end -->)", re.S)


def rewrite_readme(text: str) -> str:
    """``text`` (the README) with every generated block replaced by what the records say now."""
    for name, block in readme_blocks().items():
        text, found = block_pattern(name).subn(lambda m, block=block: f"{m[1]}{block}\n{m[3]}", text)
        if found != 1:
            raise SystemExit(f"README.md needs exactly one results:{name} block, found {found}")
    return text


def main() -> None:
    tables.OUT.write_text(results_page())
    print(f"wrote {tables.OUT}")
    text = README.read_text()
    if (new := rewrite_readme(text)) != text:
        README.write_text(new)
        print(f"rewrote the generated blocks of {README}")


if __name__ == "__main__":
    main()
