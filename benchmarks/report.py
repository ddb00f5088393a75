"""Regenerate ``benchmarks/RESULTS.md`` (and its plots) from the benchmarks' stored records.

    .venv/bin/python -m benchmarks.report

The page is the accuracy grid's tables (``benchmarks.accuracy.tables``), then the sections of the studies built on
the grid's cells (``lelp tune``, ``lelp active``, ``lelp search``). It lives at the top of the package because it
reads every benchmark: no benchmark imports it, so there is no import cycle.
"""

from __future__ import annotations

from benchmarks.accuracy import tables
from benchmarks.active import accuracy_vs_queries
from benchmarks.search import layernas_vs_samplers
from benchmarks.tune import tune_vs_grid


def results_page(seeds: int = 3) -> str:
    """RESULTS.md's text."""
    lines = tables.page(seeds)
    for study in (tune_vs_grid, accuracy_vs_queries, layernas_vs_samplers):
        lines += study.section()
    return "\n".join(lines)


def main() -> None:
    tables.OUT.write_text(results_page())
    print(f"wrote {tables.OUT}")


if __name__ == "__main__":
    main()
