"""The grid's run plan: which runs each phase names, given the records so far.

Its own module because both the runner (``grid.py``) and the tables (``tables.py``, which report only the records
the plan names) read it.
"""

from __future__ import annotations

from benchmarks.accuracy import spec
from benchmarks.accuracy.selection import choices


def plan(cells: list[spec.Cell], seeds: int, records: dict[str, dict]) -> dict[str, list[spec.Run]]:
    """The runs of each phase that can be named now (a method's finals once it is chosen)."""
    phases: dict[str, list[spec.Run]] = {"select": [], "final": [], "ablation": []}
    for cell in cells:
        chosen, select_runs = choices(cell, records)
        phases["select"] += select_runs
        for method in spec.methods_for(cell):  # a method's finals as soon as it is chosen
            if method in chosen:
                phases["final"] += [spec.make_run(cell, method, chosen[method], s, True, "final") for s in range(seeds)]
        if cell.name in spec.ABLATION_CELLS and "lelp" in chosen:
            for variants in spec.ABLATIONS.values():
                for change in variants:
                    hp = {**chosen["lelp"], **change}
                    phases["ablation"] += [spec.make_run(cell, "lelp", hp, s, True, "ablation") for s in range(seeds)]
    return phases
