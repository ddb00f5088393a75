"""The selection rule: each method's hyper-parameters, chosen from the records of validation runs only.

Seed 0, validation accuracy, the test split never read; ties go to the first candidate in grid order. Stage 1
(the student alone, KD) is chosen first; stage 2's candidates inherit KD's learning rate and τ (``spec.from_kd``),
so they exist once KD is measured; stage 3 (a method's own τ) starts from that method's stage-2 choice. A method
with one candidate is taken as it is, without runs.
"""

from __future__ import annotations

from benchmarks.accuracy.spec import METHODS, Cell, Run, make_run, methods_for


def choices(cell: Cell, records: dict[str, dict]) -> tuple[dict[str, dict], list[Run]]:
    """(each method's chosen hyper-parameters so far, the validation runs named so far) for ``cell``.

    Stage-2 candidates need KD's choice (and LELP α = 0.5 needs LELP's), so they appear once it is measured;
    stage 3 likewise waits for stage 2.
    """
    chosen: dict[str, dict] = {}
    runs: list[Run] = []
    for stage in (1, 2, 3):
        for method in methods_for(cell):
            spec = METHODS[method]
            if spec.stage != stage:
                continue
            try:
                candidates = spec.candidates(cell, chosen)
            except KeyError:  # a choice it builds on is not measured yet
                continue
            if len(candidates) == 1:
                chosen[method] = candidates[0]
                continue
            named = [make_run(cell, method, hp, 0, False, "select") for hp in candidates]
            runs += named
            scores = [records[r.key]["metrics"]["val_accuracy"] if r.key in records else None for r in named]
            if None not in scores:
                chosen[method] = candidates[max(range(len(scores)), key=lambda i: (scores[i], -i))]
    return chosen, runs
