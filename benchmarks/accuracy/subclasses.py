"""What the pseudo-subclasses of each method are, in the cells whose source knows the true hidden subclasses.

    .venv/bin/python -m benchmarks.accuracy.subclasses [--cells 20ng/minilm/bag_sparse/sup,...]

For every strategy method the grid has chosen in a cell (its selected hyper-parameters, seed 0), the strategy is
fitted on the cell's training split exactly as its runs fit it, and the subclass report
(:mod:`lelp_lightning.data.subclass_report`: sizes, NMI and purity against the fine labels, distinctive n-grams,
example rows) is computed on the training rows. No student is trained and no test split is read. One JSON record
per cell, ``benchmarks/results/accuracy/subclasses/<cell>.json``, rewritten when rerun (it depends only on the
cache and the selection); ``tables.py`` summarises them in RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os

from benchmarks import provenance
from benchmarks.accuracy import grid, spec
from benchmarks.accuracy.selection import choices

OUT = spec.REPO / "benchmarks" / "results" / "accuracy" / "subclasses"
STRATEGY_METHODS = ("oracle", "lelp", "pca", "random_projection", "kmeans", "gmm", "rp_ensemble", "lelp@repr",
                    "kmeans@repr", "gmm@repr", "rp_ensemble@repr")


def cell_report(cell: spec.Cell, chosen: dict) -> dict:
    from lelp_lightning.cli import build_cli

    grid._quiet()
    reports = {}
    for method in STRATEGY_METHODS:
        if method not in chosen or method not in spec.methods_for(cell):
            continue
        run = spec.make_run(cell, method, chosen[method], 0, False, "subclasses")
        cli = build_cli(run.args(), run=False)
        cli.datamodule.prepare_data()
        cli.datamodule.setup("fit")
        reports[method] = {"hp": chosen[method], "report": cli.datamodule.subclass_report("train")}
        print(f"{cell.name} {method}: " + "; ".join(f"class {c}: NMI {e.get('nmi')}, purity {e.get('purity')}"
                                                   for c, e in reports[method]["report"].items()), flush=True)
    return reports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", default=",".join(c for c in spec.DEFAULT_CELLS
                                                   if spec.TASKS[spec.CELLS[c].task].fine_per_class))
    args = parser.parse_args()
    records = {r["key"]: r for r in spec.load_records()}
    OUT.mkdir(parents=True, exist_ok=True)
    for name in args.cells.split(","):
        cell = spec.CELLS[name]
        chosen, _ = choices(cell, records)
        methods = cell_report(cell, chosen)
        if not methods:
            print(f"{name}: no strategy method is selected yet; run the grid first")
            continue
        sha, dirty = provenance.git_state("lelp_lightning", "benchmarks/accuracy", "configs")
        record = {"cell": name, "split": "train", "methods": methods, "git_sha": sha, "git_dirty": dirty,
                  "machine": provenance.machine(), "versions": provenance.versions("torch", "scikit-learn", "numpy"),
                  "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        path = OUT / f"{name.replace('/', '__')}.json"
        path.with_suffix(".tmp").write_text(json.dumps(record, indent=1))
        os.replace(path.with_suffix(".tmp"), path)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
