"""Write a teacher-outputs file for the file teacher from your own teacher: an LLM behind an API, a model on
another cluster, anything that answers a text with a probability per class (docs/teachers.md).

    python examples/teacher_outputs_to_file.py --output teacher.jsonl --config configs/quickstart.yaml
    lelp fit --config configs/quickstart.yaml --config configs/teacher/file.yaml --data.teacher.path teacher.jsonl

The rows are the run's (its ``--data.source``; every option after ``--output`` is a ``lelp fit`` option). Fill in
:func:`ask_teacher` with a call to your service; as shipped it asks the run's own teacher (``--data.teacher``,
the quickstart's MiniLM + MLP head), so the script runs as is. The file holds ``row_id``, ``text``, ``split`` and
one ``prob_<class>`` column per class, one row per source row; without an embedding in it, the file teacher embeds
the texts with its ``encoder`` and fits its final layer as a least-squares probe to the logits log(p).
Format by extension: .parquet, .jsonl or .csv.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from lelp_lightning.cli import build_cli

BATCH = 64  # texts per call of ask_teacher
BUNDLED = {}  # the run's own teacher, fitted once, for the shipped ask_teacher


def ask_teacher(texts: list[str], class_names: list[str]) -> list[dict[str, float]]:
    """Per text, the teacher's probability of each class name. Replace the body with a call to your service, e.g.
    one request per text asking for one of ``class_names`` with ``logprobs`` on (exp of each class token's
    log-probability, normalised), or a hard answer as ``{answer: 1.0}`` (then write a ``label`` column instead,
    see docs/teachers.md)."""
    _, logits = BUNDLED["teacher"].encode(texts)
    logits = logits - logits.max(1, keepdims=True)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return [dict(zip(class_names, map(float, row), strict=True)) for row in probs]


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, type=Path, help="the file to write: .parquet, .jsonl or .csv")
    options, run_args = parser.parse_known_args(argv)
    if options.output.suffix not in (".parquet", ".jsonl", ".csv"):
        parser.error(f"--output {options.output} must end in .parquet, .jsonl or .csv")
    data = build_cli(run_args, run=False).datamodule  # the run's source and teacher, as `lelp fit` builds them
    data.teacher.fit(data.source, data.cache)  # the shipped ask_teacher's teacher (its head, cached)
    BUNDLED["teacher"] = data.teacher
    names = data.source.class_names
    rows = []
    for split in ("train", "val", "test"):
        part = data.source.split(split)
        for lo in range(0, len(part), BATCH):
            texts = list(part.texts[lo: lo + BATCH])
            for row_id, text, answer in zip(part.row_ids[lo: lo + BATCH].tolist(), texts,
                                            ask_teacher(texts, names), strict=True):
                rows.append({"row_id": row_id, "text": text, "split": split,
                             **{f"prob_{name}": answer[name] for name in names}})
    frame = pd.DataFrame(rows)
    if options.output.suffix == ".parquet":
        frame.to_parquet(options.output, index=False)
    elif options.output.suffix == ".jsonl":
        frame.to_json(options.output, orient="records", lines=True, force_ascii=False, double_precision=15)
    else:
        frame.to_csv(options.output, index=False)
    print(f"{len(frame)} rows of teacher outputs written to {options.output}")
    return options.output


if __name__ == "__main__":
    main()
