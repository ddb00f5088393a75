"""`lelp tune`'s search space learned from the accuracy grid's records, and its leave-one-cell-out versions.

    .venv/bin/python -m benchmarks.tune.space_from_grid --write                            # learned_space.yaml
    .venv/bin/python -m benchmarks.tune.space_from_grid --show 20ng/minilm/bag_sparse/sup  # that cell's held-out space

Each cell is summarised by its grid methods' chosen configurations (the grid's validation-only selection) and their
final test accuracies. The space is then derived from the summaries of the cells other than the held-out one (whose
summary is never read, so a study on it with this space is judged honestly); the other cells' test accuracies are
training data for the space like any other measurement. The rule:

- a cell's *competitive* grid methods are those whose final test mean is within ``margin`` of the cell's best
  non-oracle test mean; by default ``margin`` is the pooled standard deviation of the two methods' seeds, at least
  ``min_margin`` (0.002);
- a space method (the default space's method a grid method runs, ``spec.Method.runs``) is kept when its grid variants
  are competitive in at least ``min_cells`` (1) cells; ``ce`` and ``kd`` are always kept; a method the grid never
  ran on those cells is kept as the default space has it (no measurement speaks against it: the grid does not run
  t-SNE + k-means, agglomerative clustering, DKD, RKD, SLaM or weighted KD, and t-SNE + k-means was ``lelp tune``'s
  winner on tweets3), except one that needs true subclasses (the oracle). Methods keep the default space's order,
  strategy and objectives;
- a kept method's parameters are the values its competitive variants' chosen configurations gave it
  (``spec.Method.values``: S → num_subclasses, τ → tau or temperature, β, α, M → num_projections, and the grid's
  fixed options such as FitNets' hint weight): a list when they differ, a fixed value when they agree. A method kept
  without a competitive variant (``ce``, ``kd``) takes them from its chosen configuration in every other cell. A
  parameter the grid never set keeps the default space's distribution. The grid ties the random-projection
  ensemble's S to its M members (S = 2·M) but a space samples them independently, so ``num_projections`` is the
  largest observed M that every observed S allows (a multiple of M with S / M >= 2): no trial is refused;
- ``representation`` (methods that have it): ``auto`` when one of the method's competitive variants read the
  teacher's other representation (an ``@repr`` variant), else ``final``; given a ``student``, only its variants in
  that student's cells decide, where there are any;
- ``lr_factor`` (shared): a log range over the chosen learning rate / the cell student's base rate of every
  competitive variant, widened by ``lr_widen`` (1.5) on both sides.
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import textwrap

import yaml

from benchmarks.accuracy import spec
from benchmarks.accuracy.selection import choices
from lelp_lightning.fileio import atomic_write_text
from lelp_lightning.tune.space import SearchSpace, default_space_path

LEARNED_SPACE = spec.REPO / "lelp_lightning" / "tune" / "learned_space.yaml"
ALWAYS_KEPT = ("ce", "kd")


def summaries(records: list[dict], cells: list[str]) -> dict[str, dict]:
    """{cell: {grid method: {"hp", "val_accuracy", "test_accuracy"}}} for ``cells``: each non-oracle method's chosen
    configuration (``selection.choices``), that configuration's seed-0 validation accuracy (None without a seed-0
    run) and its final test accuracies by seed. Methods without final runs are left out."""
    by_cell: dict[str, list[dict]] = {name: [] for name in cells}
    for record in records:
        if record["cell"] in by_cell:
            by_cell[record["cell"]].append(record)
    out = {}
    for name, own in by_cell.items():
        cell = spec.CELLS[name]
        by_key = {r["key"]: r for r in own}
        chosen, _ = choices(cell, by_key)
        methods = {}
        for method, hp in chosen.items():
            if method == "oracle":
                continue
            finals = sorted((r for r in own if r["phase"] == "final" and r["method"] == method and r["hp"] == hp),
                            key=lambda r: r["seed"])
            if not finals:
                continue
            seed0 = [by_key.get(spec.make_run(cell, method, hp, 0, test, phase).key)
                     for test, phase in ((False, "select"), (True, "final"))]
            seed0 = next((r for r in seed0 if r is not None), None)
            methods[method] = {"hp": hp, "val_accuracy": seed0["metrics"]["val_accuracy"] if seed0 else None,
                               "test_accuracy": [r["metrics"]["test_accuracy"] for r in finals]}
        out[name] = methods
    return out


def _pooled_std(a: list[float], b: list[float]) -> float:
    dof = len(a) + len(b) - 2
    if dof <= 0:
        return 0.0
    spread = sum((len(x) - 1) * statistics.variance(x) for x in (a, b) if len(x) > 1)
    return math.sqrt(spread / dof)


def competitive(cell_summary: dict, margin: float | None = None, min_margin: float = 0.002) -> list[str]:
    """The grid methods of one cell's summary whose test mean is within the margin of the best one's."""
    if not cell_summary:
        return []
    means = {m: statistics.fmean(s["test_accuracy"]) for m, s in cell_summary.items()}
    best = max(means, key=means.get)
    best_tests = cell_summary[best]["test_accuracy"]
    return [m for m, s in cell_summary.items()
            if means[m] >= means[best] - (margin if margin is not None else
                                          max(_pooled_std(s["test_accuracy"], best_tests), min_margin))]


def _catalogue() -> dict:
    """The default space as written (its methods' strategy and objectives are reused as they are)."""
    SearchSpace.load()  # checked
    return yaml.safe_load(default_space_path().read_text())


def _collect(values: list) -> object:
    distinct = sorted(set(values))
    return distinct[0] if len(distinct) == 1 else distinct


def _members_every_s_allows(subclasses: list[int], members: list[int]) -> int:
    return max(m for m in members if all(s % m == 0 and s // m >= 2 for s in subclasses))


def derive_space(summaries: dict, leave_out: str | None = None, student: str | None = None, *,
                 margin: float | None = None, min_margin: float = 0.002, min_cells: int = 1,
                 lr_widen: float = 1.5) -> dict:
    """The search space (``default_space.yaml``'s format) the module docstring's rule derives from the summaries of
    every cell but ``leave_out``, whose summary is never read. ``student``: the held-out cell's student, whose cells
    decide ``representation`` where they can."""
    others = [cell for cell in summaries if cell != leave_out]
    found: dict[str, list[tuple[str, str]]] = {}  # space method -> [(cell, competitive grid method)]
    for cell in others:
        for method in competitive(summaries[cell], margin, min_margin):
            found.setdefault(spec.METHODS[method].runs, []).append((cell, method))
    catalogue = _catalogue()
    measured = {spec.METHODS[m].runs for cell in others for m in summaries[cell]}
    needs_fine = {m.runs for m in spec.METHODS.values() if m.needs_fine}
    methods, lr_factors = {}, []
    for name, entry in catalogue["methods"].items():
        if name not in measured and name not in ALWAYS_KEPT:  # no measurement either way: as the catalogue has it
            if name not in needs_fine:
                methods[name] = copy.deepcopy(entry)
            continue
        variants = found.get(name, [])
        if len({cell for cell, _ in variants}) < min_cells and name not in ALWAYS_KEPT:
            continue
        # kept without a competitive variant: its chosen configuration in every other cell
        chosen = variants or [(cell, m) for cell in others for m in summaries[cell] if spec.METHODS[m].runs == name]
        observed: dict[str, list] = {}
        for cell, method in chosen:
            for param, value in spec.METHODS[method].values(summaries[cell][method]["hp"]).items():
                observed.setdefault(param, []).append(value)
        params = copy.deepcopy(entry.get("params") or {}) | {k: _collect(v) for k, v in observed.items()}
        if "num_projections" in observed:
            params["num_projections"] = _members_every_s_allows(observed["num_subclasses"], observed["num_projections"])
        if "representation" in params and chosen:
            own = [(cell, m) for cell, m in chosen if student is not None and spec.CELLS[cell].student == student]
            params["representation"] = "auto" if any(spec.METHODS[m].representation for _, m in own or chosen) \
                else "final"
        methods[name] = {k: copy.deepcopy(v) for k, v in entry.items() if k != "params"} | \
            ({"params": params} if params else {})
        lr_factors += [round(summaries[cell][m]["hp"]["lr"] / spec.STUDENTS[spec.CELLS[cell].student].lr, 6)
                       for cell, m in variants]
    shared = copy.deepcopy(catalogue.get("shared") or {})
    if lr_factors:
        shared["lr_factor"] = {"low": min(lr_factors) / lr_widen, "high": max(lr_factors) * lr_widen, "log": True}
    return {"shared": shared, "methods": methods}


def to_yaml(space: dict) -> str:
    return yaml.safe_dump(space, sort_keys=False, default_flow_style=None, width=118)


def header(cells: list[str], newest: str) -> str:
    rule = __doc__.split("The rule:\n", 1)[1].strip()
    return "\n".join(["# lelp tune's search space learned from the accuracy grid's records. Generated by",
                      "#   .venv/bin/python -m benchmarks.tune.space_from_grid --write",
                      "# (do not edit by hand: tests/tune/test_space_from_grid.py checks it equals the derivation).",
                      *textwrap.wrap(f"Cells ({len(cells)}): {', '.join(cells)}.", 117, initial_indent="# ",
                                     subsequent_indent="#   "),
                      f"# Newest record read: {newest}.", "# The rule (benchmarks/tune/space_from_grid.py):",
                      *(f"#   {line}".rstrip() for line in rule.splitlines()), ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help=f"write {LEARNED_SPACE.relative_to(spec.REPO)}")
    parser.add_argument("--show", metavar="CELL", help="print the space derived without CELL's records")
    args = parser.parse_args()
    if not args.write and not args.show:
        parser.error("give --write or --show CELL")
    records = spec.load_records()
    summary = summaries(records, spec.TUNE_CELLS)
    if args.show:
        if args.show not in spec.DEFAULT_CELLS:
            raise SystemExit(f"unknown cell {args.show!r}; cells: {', '.join(spec.DEFAULT_CELLS)}")
        print(to_yaml(derive_space(summary, leave_out=args.show, student=spec.CELLS[args.show].student)), end="")
    if args.write:
        space = derive_space(summary)
        SearchSpace.from_dict(space, "learned space")
        newest = max(r["created"] for r in records if r["cell"] in spec.TUNE_CELLS)
        atomic_write_text(LEARNED_SPACE, header(spec.TUNE_CELLS, newest) + to_yaml(space))
        print(f"wrote {LEARNED_SPACE.relative_to(spec.REPO)}: {', '.join(space['methods'])}")


if __name__ == "__main__":
    main()
