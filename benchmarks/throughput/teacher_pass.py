"""Teacher pass: rows/s of the lelp cache build vs sentence-transformers ``encode()`` on the same model, texts,
batch size, max length and threads, interleaved in one run.

    .venv/bin/python -m benchmarks.throughput.teacher_pass [--rows 512] [--rounds 3] [--batch-size 64] [--device cuda]

Variants (ours): the single-process cache build (``TeacherCache.build``, fp32 and bf16 autocast) and the
``lelp cache`` path (Lightning predict, 1 process, fp32). Each round times every variant once, freshly
(new cache folder), in a rotating order; the table reports the median and the fastest over rounds, the
ratios to ``encode()``'s median and fastest, and how far our embeddings are from ``encode()``'s. On a busy
machine the "paired per batch" rows are the steadiest ratio: encoder and ``encode()`` alternate batch by
batch (each batching its own way), so load changes hit both alike; they time the encoding, not the writes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.throughput import common  # noqa: E402
from lelp_lightning.cache import TeacherCache  # noqa: E402
from lelp_lightning.cache.teacher_pass import TeacherPass  # noqa: E402
from lelp_lightning.encoders import resolve_model_path  # noqa: E402
from lelp_lightning.sources import SPLITS, Tweets  # noqa: E402
from lelp_lightning.teachers import SentenceEncoderTeacher  # noqa: E402


def paired_batches(st, teachers: dict, texts: list[str], batch_size: int, rounds: int) -> dict[str, float]:
    """Seconds per variant when the variants take turns batch by batch, so a busy machine slows all alike.

    Each side batches as it does on its own: ``encode()`` by character length (its sort), ours by token
    length (``bucketed_order``, timed too); batch k of each order runs back to back, in a rotating order.
    """
    total = {"encode()": 0.0, **{f"encoder {p}": 0.0 for p in teachers}}
    for _ in range(rounds):
        st_order = np.argsort([-len(t) for t in texts], kind="stable")
        start = time.perf_counter()
        ours_order = teachers["fp32"].encoder.bucketed_order(texts)
        for p in teachers:
            total[f"encoder {p}"] += time.perf_counter() - start
        runs = {"encode()": lambda idx: st.encode([texts[i] for i in idx], batch_size=batch_size,
                                                 show_progress_bar=False),
                **{f"encoder {p}": (lambda idx, t=t: t.encoder.embed([texts[i] for i in idx]))
                   for p, t in teachers.items()}}
        names = list(runs)
        for k, lo in enumerate(range(0, len(texts), batch_size)):
            for name in names[k % len(names):] + names[: k % len(names)]:
                index = (st_order if name == "encode()" else ours_order)[lo: lo + batch_size]
                start = time.perf_counter()
                runs[name](index)
                total[name] += time.perf_counter() - start
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    common.CACHE.mkdir(parents=True, exist_ok=True)
    from lightning.pytorch import Trainer
    from sentence_transformers import SentenceTransformer

    source = Tweets(num_classes=2, max_rows=args.rows, seed=0)
    texts = [t for s in SPLITS for t in source.split(s).texts]
    n = len(texts)
    st = SentenceTransformer(str(resolve_model_path("all-MiniLM-L6-v2")), device=args.device)
    st.max_seq_length = args.max_length

    def teacher(precision: str) -> SentenceEncoderTeacher:
        return SentenceEncoderTeacher(max_length=args.max_length, batch_size=args.batch_size, precision=precision)

    teachers = {"fp32": teacher("fp32"), "bf16": teacher("bf16")}
    for t in teachers.values():  # the encoder's inputs follow its weights
        t.encoder._load().to(args.device)
    outputs: dict[str, np.ndarray] = {}

    def st_encode():
        outputs["encode()"] = st.encode(texts, batch_size=args.batch_size, convert_to_numpy=True,
                                        show_progress_bar=False)

    def cache_build(precision: str):
        def run():
            folder = Path(tempfile.mkdtemp(dir=common.CACHE))
            try:
                cache = TeacherCache(folder)
                t = teachers[precision]
                outputs[f"cache build {precision}"] = np.concatenate(
                    [np.asarray(t.features(source, s, cache)) for s in SPLITS])
            finally:
                shutil.rmtree(folder)
        return run

    def lightning_pass():
        folder = Path(tempfile.mkdtemp(dir=common.CACHE))
        try:
            cache = TeacherCache(folder)
            t = teachers["fp32"]
            trainer = Trainer(accelerator="gpu" if args.device.startswith("cuda") else "cpu", devices=1, logger=False,
                              enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
            teacher_pass = TeacherPass(cache, lambda: t.pass_targets(source, cache), "features")
            trainer.predict(teacher_pass, return_predictions=False)
            teacher_pass.finish()
            outputs["lelp cache fp32 (Lightning predict)"] = np.concatenate(
                [np.asarray(t.features(source, s, cache)) for s in SPLITS])
        finally:
            shutil.rmtree(folder)

    variants = {"encode()": st_encode, "cache build fp32": cache_build("fp32"),
                "cache build bf16": cache_build("bf16"), "lelp cache fp32 (Lightning predict)": lightning_pass}
    for t in teachers.values():  # load weights and tokenizer once, outside the timings
        t.encoder.embed(texts[:2])
    st.encode(texts[:2])
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            seconds[name].append(common.timed(variants[name]))
            print(f"round {r}: {name}: {n / seconds[name][-1]:.1f} rows/s", flush=True)

    paired = paired_batches(st, teachers, texts, args.batch_size, args.rounds)
    reference = outputs["encode()"]
    peer = n / common.median(seconds["encode()"])
    peer_best = n / min(seconds["encode()"])
    rows = []
    for name in names:
        emb = outputs[name]
        cosine = np.sum(emb * reference, 1) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(reference, axis=1))
        rate = n / common.median(seconds[name])
        rows.append({"variant": name, "device": args.device, "rows": n, "batch_size": args.batch_size,
                     "max_length": args.max_length,
                     "threads": args.threads, "rounds": args.rounds, "median_seconds": common.median(seconds[name]),
                     "rows_per_s": rate, "ratio_vs_encode": rate / peer,
                     "rows_per_s_best": n / min(seconds[name]),
                     "ratio_vs_encode_best": n / min(seconds[name]) / peer_best,
                     "max_abs_diff_vs_encode": float(np.abs(emb - reference).max()),
                     "min_cosine_vs_encode": float(cosine.min()),
                     "all_seconds": " ".join(f"{s:.3f}" for s in seconds[name])})
    for name, total in paired.items():
        rows.append({"variant": f"paired per batch: {name}", "device": args.device, "rows": n,
                     "batch_size": args.batch_size, "max_length": args.max_length, "threads": args.threads,
                     "rounds": args.rounds, "rows_per_s": args.rounds * n / total,
                     "ratio_vs_encode": paired["encode()"] / total})
    path = common.write_csv("teacher_pass", rows, "transformers", "sentence-transformers")
    common.print_table(f"teacher pass, all-MiniLM-L6-v2, {n} tweets ({common.threads_note()})", rows,
                       ["variant", "rows_per_s", "ratio_vs_encode", "rows_per_s_best", "ratio_vs_encode_best",
                        "max_abs_diff_vs_encode", "min_cosine_vs_encode"])
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
