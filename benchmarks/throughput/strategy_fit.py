"""Fit time and peak memory of every strategy on a memory-mapped float32 cache, against scikit-learn.

    .venv/bin/python -m benchmarks.throughput.strategy_fit  # N ∈ {1e4,1e5,1e6} × D ∈ {384,768} + 1.6M×768
    .venv/bin/python -m benchmarks.throughput.strategy_fit --sizes 10000 --dims 384 --no-sentiment140   # a quick look

Data: a synthetic two-class cache (each class a mixture of 4 anisotropic Gaussian blobs; fine label = blob),
written as a float32 ``.npy`` memmap under ``--data-dir`` and deleted after its runs (1.6M × 768 is 4.9 GB).
Every fit runs in its own subprocess, so its memory is its own:

- time: wall-clock seconds of ``fit`` alone, best of ``--repeats`` fits (fewer once they add up to 10 s) for
  N ≤ 1e5 (with ``--rounds R``, our worker and scikit-learn's alternate R times there and each side keeps
  its best: on a shared machine a slow minute then cannot land on one side only) and a single fit above
  (the scikit-learn side excludes loading the class rows into memory, which it needs and our strategies do
  not: that load is reported as ``load_s``);
- peak memory: the largest anonymous resident memory (``RssAnon`` in /proc/self/status, sampled every 5 ms
  by a thread) above what the process held before the fit, in MB, taken in the process's first fit (for
  N ≤ 1e5 an extra, untimed one, since the sampling thread slows small fits measurably). Anonymous memory
  excludes the memmap's page cache, which the kernel can drop at any time; it includes scikit-learn's
  in-memory copy of the rows;
- quality, on the same data: PCA: the variance of the class rows captured by our S directions over that
  captured by scikit-learn's (1 = as good; the largest principal angle between the subspaces is recorded
  too, but it is ill-conditioned when the S-th and (S+1)-th eigenvalues are close); k-means: our inertia /
  scikit-learn's (KMeans, same ``n_init``; MiniBatchKMeans shown beside);
  GMM: our mean log-likelihood per row minus scikit-learn's (GaussianMixture, same ``max_iter``/``tol``, and
  one k-means start for the initialisation on both sides, ``init_starts=1``, as scikit-learn's default; a class
  larger than our sample still gets its ``sample_starts`` screened starts there).

Runs with S = 4 pseudo-subclasses per class. Each run appends an immutable JSON record (git sha, config, seed,
machine, versions, rows) to ``benchmarks/results/strategy_fit/`` and regenerates
``benchmarks/results/strategy_fit/TABLE.md`` from every record there, newest first (a run of a few methods or
sizes adds a section; it does not hide the full run). This is a benchmark, not a test; the machine may be
shared, so compare ratios taken in the same run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks import provenance

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results" / "strategy_fit"
C, BLOBS, RANK = 2, 4, 16
S = 4  # subclasses per class: one per blob, so the clusterings have one clear optimum to be compared at

# name -> (our strategy and options, the scikit-learn equivalent or None, largest N it is run at);
# "capped" ones cluster a fixed-size sample, so they run at the grid's smallest and largest N only.
METHODS = {
    "lelp": (("lelp", {}), "pca", None),
    "pca": (("pca", {}), "pca", None),
    "random_projection": (("random_projection", {}), "pca", None),
    "kmeans": (("kmeans", {"n_init": 3}), "kmeans", None),
    "gmm_diag": (("gmm", {"covariance_type": "diag", "init_starts": 1}), "gmm_diag", None),
    "gmm_full": (("gmm", {"covariance_type": "full", "init_starts": 1}), "gmm_full", 100_000),
    "agglomerative": (("agglomerative", {}), "agglomerative", "capped"),
    "tsne_kmeans": (("tsne_kmeans", {}), None, "capped"),
    "random_split": (("random_split", {}), None, None),
    "oracle": (("oracle", {"num_subclasses": BLOBS}), None, None),
    "none": (("none", {"num_subclasses": 1}), None, None),
    "subclass_distillation": (("subclass_distillation", {}), None, None),
}
SKLEARN_LIMITS = {"agglomerative": 10_000, "gmm_full": 100_000}  # O(N²) memory / O(N·D²) per EM step


# -- data ---------------------------------------------------------------------------------------------------
def make_data(folder: Path, n: int, d: int, seed: int) -> Path:
    """A synthetic float32 cache [n,d] with labels, fine labels and a classifier, written chunk by chunk."""
    path = folder / f"n{n}_d{d}"
    if (path / "done").is_file():
        return path
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(C, BLOBS, d)).astype(np.float32) * 1.5
    bases = rng.normal(size=(C, BLOBS, RANK, d)).astype(np.float32) / np.sqrt(RANK)
    labels = rng.integers(0, C, n)
    blobs = rng.integers(0, BLOBS, n)
    x = np.lib.format.open_memmap(path / "embedding.npy", mode="w+", dtype=np.float32, shape=(n, d))
    for lo in range(0, n, 50_000):
        hi = min(n, lo + 50_000)
        c, k = labels[lo:hi], blobs[lo:hi]
        low_rank = np.einsum("nr,nrd->nd", rng.standard_normal((hi - lo, RANK), dtype=np.float32), bases[c, k])
        x[lo:hi] = means[c, k] + 2.0 * low_rank + rng.standard_normal((hi - lo, d), dtype=np.float32) * 0.5
    x.flush()
    del x
    np.save(path / "label.npy", labels)
    np.save(path / "fine.npy", labels * BLOBS + blobs)
    np.savez(path / "classifier.npz", W=rng.normal(size=(C, d)), b=np.zeros(C))
    (path / "done").write_text("")
    return path


# -- memory -------------------------------------------------------------------------------------------------
def rss_anon_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class PeakMemory:
    """Samples RssAnon every 5 ms in a thread; ``extra`` is the peak above the value at start."""

    def __enter__(self):
        self.start = rss_anon_mb()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_anon_mb())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_anon_mb())
        self.extra = self.peak - self.start


# -- one fit per process --------------------------------------------------------------------------------------
def captured_variance_ratio(path: Path, ours: np.ndarray, theirs: np.ndarray, chunk=65536) -> float:
    """Σ_c Σ_s Var(h·u_{c,s}) over class c's rows for our directions / for scikit-learn's (float64, chunked)."""
    x = np.load(path / "embedding.npy", mmap_mode="r")
    y = np.load(path / "label.npy")
    moments = np.zeros((2, C, 3, S))  # [ours|theirs, class, (n, Σp, Σp²), direction]
    for lo in range(0, len(y), chunk):
        xb, yb = np.asarray(x[lo:lo + chunk], dtype=np.float64), y[lo:lo + chunk]
        for c in range(C):
            for k, U in enumerate((ours[c], theirs[c])):
                p = xb[yb == c] @ U
                moments[k, c] += [np.full(S, len(p)), p.sum(0), (p * p).sum(0)]
    n, s1, s2 = moments[:, :, 0], moments[:, :, 1], moments[:, :, 2]
    variance = (s2 / n - (s1 / n) ** 2).sum((1, 2))
    return float(variance[0] / variance[1])


def subspace_angle(a: np.ndarray, b: np.ndarray) -> float:
    import scipy.linalg

    return float(scipy.linalg.subspace_angles(a, b).max())


def kmeans_inertia(x, y, centroids, chunk=65536) -> float:
    """Σ over rows of the squared distance to the nearest centroid of the row's class (float64, chunked)."""
    total = 0.0
    for lo in range(0, x.shape[0], chunk):
        xb, yb = np.asarray(x[lo:lo + chunk], dtype=np.float64), y[lo:lo + chunk]
        for c in range(C):
            xc = xb[yb == c]
            m = centroids[c]
            d = (xc * xc).sum(1)[:, None] - 2 * xc @ m.T + (m * m).sum(1)
            total += float(np.maximum(d.min(1), 0).sum())
    return total


def measure(fit, repeats: int) -> tuple[list[float], float]:
    """Peak extra memory of a first fit under :class:`PeakMemory` (first, while the process's allocator has
    nothing to reuse), then the times of ``repeats`` plain fits; with ``repeats`` = 1 the one fit is both."""
    with PeakMemory() as memory:
        first = fit()
    if repeats == 1:
        return [first], memory.extra
    times = [fit()]
    while len(times) < repeats and sum(times) < 10.0:  # slow fits are their own average
        times.append(fit())
    return times, memory.extra


def run_ours(path: Path, method: str, seed: int, repeats: int) -> dict:
    import torch

    from lelp_lightning.strategies import RowInfo, strategies

    x = np.load(path / "embedding.npy", mmap_mode="r")
    y = np.load(path / "label.npy")
    clf = np.load(path / "classifier.npz")
    rows = RowInfo(row_ids=np.arange(len(y)), fine_labels=np.load(path / "fine.npy"))
    (name, options), _, _ = METHODS[method]
    def fit() -> float:
        nonlocal strategy
        strategy = strategies.get(name)(**{"num_subclasses": S, "seed": seed, **options})
        start = time.perf_counter()
        strategy.fit(x, y, (clf["W"], clf["b"]), rows=rows)
        return time.perf_counter() - start

    strategy = None
    times, peak = measure(fit, repeats)
    out = {"fit_s": min(times), "fit_s_all": times, "peak_extra_mb": peak, "threads": torch.get_num_threads()}
    if name == "pca":
        np.save(path / "ours_pca.npy", np.stack([strategy.directions_of(c).numpy() for c in range(C)]))
    if name == "kmeans":
        out["inertia"] = kmeans_inertia(x, y, strategy.centroids.numpy())
    if name == "gmm":
        total = 0.0
        for lo in range(0, len(y), 65536):
            ll = strategy.class_log_likelihood(np.asarray(x[lo:lo + 65536], dtype=np.float64)).numpy()
            total += float(ll[np.arange(len(ll)), y[lo:lo + 65536]].sum())
        out["mean_log_likelihood"] = total / len(y)
    if name == "subclass_distillation":
        out.update(strategy.report(x, y))
    return out


def run_sklearn(path: Path, method: str, seed: int, repeats: int) -> dict:
    from sklearn.cluster import AgglomerativeClustering, KMeans, MiniBatchKMeans
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    x = np.load(path / "embedding.npy", mmap_mode="r")
    y = np.load(path / "label.npy")
    make = {
        "pca": lambda: PCA(n_components=S, random_state=seed),
        "kmeans": lambda: KMeans(S, n_init=3, random_state=seed),
        "minibatch_kmeans": lambda: MiniBatchKMeans(S, n_init=3, batch_size=4096, random_state=seed),
        "gmm_diag": lambda: GaussianMixture(S, covariance_type="diag", max_iter=100, tol=1e-3, random_state=seed),
        "gmm_full": lambda: GaussianMixture(S, covariance_type="full", max_iter=100, tol=1e-3, random_state=seed),
        "agglomerative": lambda: AgglomerativeClustering(S, linkage="ward"),
    }[method]
    models, loads = [], []

    def fit() -> float:
        fit_s = load_s = 0.0
        models.clear()
        for c in range(C):
            start = time.perf_counter()
            xc = np.asarray(x[y == c])  # scikit-learn needs the class's rows in memory
            load_s += time.perf_counter() - start
            start = time.perf_counter()
            model = make().fit(xc)
            fit_s += time.perf_counter() - start
            models.append((model, model.score(xc) * len(xc) if method.startswith("gmm") else None))  # untimed
            del xc
        loads.append(load_s)
        return fit_s

    times, peak = measure(fit, repeats)
    out = {"fit_s": min(times), "fit_s_all": times, "load_s": min(loads), "peak_extra_mb": peak}
    if method == "pca":
        np.save(path / "sklearn_pca.npy", np.stack([m.components_.T for m, _ in models]))
    if method.endswith("kmeans"):
        out["inertia"] = kmeans_inertia(x, y, np.stack([m.cluster_centers_ for m, _ in models]).astype(np.float64))
    if method.startswith("gmm"):
        out["mean_log_likelihood"] = sum(total for _, total in models) / len(y)
    return out


def worker(spec: dict) -> None:
    path, method, seed, repeats = Path(spec["path"]), spec["method"], spec["seed"], spec["repeats"]
    run = run_ours if spec["side"] == "ours" else run_sklearn
    result = run(path, method, seed, repeats)
    print("RESULT " + json.dumps(result), flush=True)


def run_worker(spec: dict, timeout: int) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.throughput.strategy_fit", "--worker", json.dumps(spec)]  # from the root
    threads = str(spec["threads"])  # torch, OpenMP (scikit-learn) and BLAS alike, set before they load
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
           "OPENBLAS_NUM_THREADS": threads}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]}
    return json.loads(lines[-1][len("RESULT "):])


def best_round(results: list[dict]) -> dict:
    """Alternating rounds of one side merged: its fastest fit (and load) over all rounds; memory and quality
    from the first round that ran (the fits are deterministic, so quality does not change between rounds)."""
    ran = [r for r in results if "error" not in r]
    if not ran:
        return results[0]
    best = {**ran[0], "fit_s_all": [t for r in ran for t in r["fit_s_all"]], "rounds": len(results)}
    best["fit_s"] = min(best["fit_s_all"])
    if "load_s" in best:
        best["load_s"] = min(r["load_s"] for r in ran)
    return best


# -- the table ------------------------------------------------------------------------------------------------
def quality(row: dict) -> str:
    if "variance_ratio" in row:
        return f"variance captured ×{row['variance_ratio']:.6f} (angle {row['angle_rad']:.1e} rad)"
    if "inertia_ratio" in row:
        text = f"inertia ×{row['inertia_ratio']:.4f}"
        if "minibatch_inertia_ratio" in row:
            text += f" (MiniBatch ×{row['minibatch_inertia_ratio']:.4f})"
        return text
    if "ll_difference" in row:
        return f"Δll/row {row['ll_difference']:+.3f} ({100 * row['ll_relative']:+.2f}%)"
    if "retrained_teacher_accuracy" in row:
        return f"head acc {row['retrained_teacher_accuracy']:.3f}"
    return ""


def cell_time(side: dict | None, skipped: str | None = None) -> str:
    if not side:
        return skipped or "—"
    return side["error"] if "error" in side else f"{side['fit_s']:.2f}"


def cell_memory(side: dict | None) -> str:
    return f"{side['peak_extra_mb']:.0f}" if side and "peak_extra_mb" in side else "—"


def table(record: dict) -> str:
    """One record's section of TABLE.md."""
    m = record["machine"]
    methods = sorted({r["method"] for r in record["rows"]}, key=list(METHODS).index)
    lines = [
        f"## Record `{record['file']}`: {', '.join(methods)}", "",
        f"git {record['git_sha'][:10]}{' (dirty)' if record['git_dirty'] else ''} · {record['created']} · "
        f"{m['cpu']} · {m['cores']} cores · {m['memory_gb']} GB · load average at start {m['load_avg']} · "
        f"torch {record['versions']['torch']} · scikit-learn {record['versions']['scikit-learn']} · "
        f"seed {record['seed']} · "
        f"{record['config']['threads']} thread(s) per fit, both sides"
        + (f"; for N ≤ 1e5 ours and scikit-learn alternated {record['config']['rounds']} times, each side's best kept"
           if record["config"].get("rounds", 1) > 1 else ""),
        "", "ours s: seconds of `fit`, reading the memmap in chunks. sk s: scikit-learn's per-class fits alone; "
        "sk load s: reading the class rows from the memmap into memory, which scikit-learn needs first. "
        "Peak: MB of anonymous memory above the process's own before the fit (scikit-learn's includes its "
        "in-memory rows). Ratios (> 1: ours is faster): sk s / ours s, and (sk load s + sk s) / ours s. "
        "Quality: see the script's docstring.",
        "", "| N | D | strategy | ours s | ours peak MB | scikit-learn | sk s | sk load s | sk peak MB | ratio fit "
        "| ratio load+fit | quality |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in record["rows"]:
        ours, sk = r["ours"], r.get("sklearn")
        both = sk and "fit_s" in sk and "fit_s" in ours
        ratio = f"{sk['fit_s'] / ours['fit_s']:.2f}" if both else "—"
        ratio_load = f"{(sk['fit_s'] + sk['load_s']) / ours['fit_s']:.2f}" if both else "—"
        load = f"{sk['load_s']:.2f}" if sk and "load_s" in sk else "—"
        text = quality(r)
        if r.get("minibatch") and "fit_s" in r["minibatch"]:
            text += f"; MiniBatchKMeans {r['minibatch']['fit_s']:.2f} s"
        lines.append(f"| {r['n']:,} | {r['d']} | {r['method']} | {cell_time(ours)} | {cell_memory(ours)} "
                     f"| {r.get('sklearn_name') or '—'} | {cell_time(sk, r.get('sklearn_skipped'))} | {load} "
                     f"| {cell_memory(sk)} | {ratio} | {ratio_load} | {text} |")
    return "\n".join(lines) + "\n"


def tables() -> str:
    """TABLE.md: every record's section, newest first (record names start with their UTC time)."""
    records = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"), reverse=True)]
    return "# Strategy fit: time and peak memory\n\nEvery run of `benchmarks/throughput/strategy_fit.py`, newest " \
           "first; compare ratios within a record (the machine differs between records).\n\n" + \
           "\n".join(table(r) for r in records)


# -- driver ---------------------------------------------------------------------------------------------------
def machine() -> dict:
    """The machine of a record, with its memory and the load average at the start (a shared machine shows it)."""
    with open("/proc/meminfo") as meminfo:
        mem = next(int(l.split()[1]) for l in meminfo if l.startswith("MemTotal"))
    return provenance.machine(memory_gb=round(mem / 2**20, 1), load_avg=" ".join(f"{v:.1f}" for v in os.getloadavg()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--dims", default="384,768")
    parser.add_argument("--no-sentiment140", action="store_true", help="skip the 1.6M × 768 dataset")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--data-dir", default="/tmp/lelp_strategy_fit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="threads for both sides (torch, OpenMP, BLAS); 1 is far less sensitive to a busy machine")
    parser.add_argument("--repeats", type=int, default=5, help="fits per measurement for N <= 1e5 (best is kept)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="for N <= 1e5, run ours and scikit-learn alternately this many times (each keeps its "
                             "best), so a slow spell of a shared machine does not fall on one side only")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per fit before it is reported as timed out")
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return

    sha, dirty = provenance.git_state("lelp_lightning", "benchmarks/throughput")
    grid = [(int(float(n)), int(d)) for n in args.sizes.split(",") for d in args.dims.split(",")]
    if not args.no_sentiment140:
        grid.append((1_600_000, 768))
    methods = args.methods.split(",")
    record = {"benchmark": "strategy_fit", "git_sha": sha, "git_dirty": dirty,
              "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "config": {**vars(args), "grid": grid, "S": S, "classes": C, "blobs": BLOBS}, "seed": args.seed,
              "machine": machine(), "versions": provenance.versions("torch", "numpy", "scikit-learn", "scipy"),
              "rows": []}
    data_dir = Path(args.data_dir)
    for n, d in grid:
        print(f"\n== N={n:,} D={d}: writing the synthetic memmap", flush=True)
        path = make_data(data_dir, n, d, args.seed)
        sklearn_done: dict[str, dict] = {}
        try:
            for method in methods:
                (_, _), sk_name, limit = METHODS[method]
                if limit == "capped" and n not in (min(g[0] for g in grid), max(g[0] for g in grid)):
                    continue
                if isinstance(limit, int) and n > limit:
                    continue
                spec = {"path": str(path), "method": method, "seed": args.seed, "threads": args.threads,
                        "repeats": args.repeats if n <= 100_000 else 1}
                row = {"n": n, "d": d, "method": method, "sklearn_name": sk_name}
                compared = sk_name is not None and n <= SKLEARN_LIMITS.get(sk_name, n)
                sk_spec = {**spec, "side": "sklearn", "method": sk_name}
                if args.rounds > 1 and n <= 100_000:  # ours and scikit-learn alternate, each keeps its best round
                    rounds = [(run_worker({**spec, "side": "ours"}, args.timeout),
                               run_worker(sk_spec, args.timeout) if compared else None) for _ in range(args.rounds)]
                    row["ours"] = best_round([r[0] for r in rounds])
                    if compared:
                        row["sklearn"] = best_round([r[1] for r in rounds])
                else:
                    row["ours"] = run_worker({**spec, "side": "ours"}, args.timeout)
                    if compared:
                        if sk_name not in sklearn_done:  # one PCA-per-class run serves lelp, pca, random_projection
                            sklearn_done[sk_name] = run_worker(sk_spec, args.timeout)
                        row["sklearn"] = sklearn_done[sk_name]
                if not compared and sk_name is not None:
                    row["sklearn_skipped"] = f"not run above N={SKLEARN_LIMITS[sk_name]:,}"
                ours, sk = row["ours"], row.get("sklearn") or {}
                if method == "pca" and (path / "ours_pca.npy").is_file() and (path / "sklearn_pca.npy").is_file():
                    a, b = np.load(path / "ours_pca.npy"), np.load(path / "sklearn_pca.npy")
                    row["angle_rad"] = max(subspace_angle(a[c], b[c]) for c in range(C))
                    row["variance_ratio"] = captured_variance_ratio(path, a, b)
                if "inertia" in ours and "inertia" in sk:
                    row["inertia_ratio"] = ours["inertia"] / sk["inertia"]
                    if n >= 100_000:
                        mb = run_worker({**spec, "side": "sklearn", "method": "minibatch_kmeans"}, args.timeout)
                        row["minibatch"] = mb
                        if "inertia" in mb:
                            row["minibatch_inertia_ratio"] = mb["inertia"] / sk["inertia"]
                if "mean_log_likelihood" in ours and "mean_log_likelihood" in sk:
                    row["ll_difference"] = ours["mean_log_likelihood"] - sk["mean_log_likelihood"]
                    row["ll_relative"] = row["ll_difference"] / abs(sk["mean_log_likelihood"])
                if "retrained_teacher_accuracy" in ours:
                    row["retrained_teacher_accuracy"] = ours["retrained_teacher_accuracy"]
                record["rows"].append(row)
                print(json.dumps(row), flush=True)
        finally:
            shutil.rmtree(path, ignore_errors=True)  # the big memmaps never outlive their runs

    RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"{record['created'].replace(':', '').replace('-', '')[:15]}_{sha[:10]}.json"
    record["file"] = name
    out = RESULTS / name
    with open(out, "x") as f:  # immutable: never overwrite a record
        json.dump(record, f, indent=1)
    (RESULTS / "TABLE.md").write_text(tables())
    print(f"\nrecord: {out}\n\n{table(record)}")


if __name__ == "__main__":
    main()
