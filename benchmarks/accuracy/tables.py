"""The accuracy grid's part of ``benchmarks/RESULTS.md`` (its tables and plots), from the grid's JSON records.

Reads only ``benchmarks/results/accuracy/records`` (and the cache-build times in ``.../prepare``); every
number comes from a record. Accuracy is the test accuracy of the last epoch, mean ± sample std over seeds; "n" is
the number of seeds. A difference between two methods is called a win or a loss only when it exceeds twice its
standard error (√(s₁²/n₁ + s₂²/n₂)); otherwise it is "within noise". ``benchmarks/report.py`` writes the page.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict

from benchmarks.accuracy import peers, spec
from benchmarks.accuracy.plan import plan
from benchmarks.accuracy.selection import choices

OUT = spec.REPO / "benchmarks" / "RESULTS.md"  # the page these tables go into: plots are linked relative to it
PLOTS = spec.REPO / "benchmarks" / "results" / "accuracy" / "plots"
PREPARE = spec.REPO / "benchmarks" / "results" / "accuracy" / "prepare"
SUBCLASSES = spec.REPO / "benchmarks" / "results" / "accuracy" / "subclasses"

PAPER = (
    "The paper's numbers (student test accuracy %, 3 seeds; from secondary copies of the paper, see\n"
    "`docs/methods.md`), for orientation only — different data, teachers, students and scale:\n"
    "\n"
    "| benchmark (paper) | vanilla KD | Subclass Distillation | clustering baselines | LELP | oracle |\n"
    "|---|---|---|---|---|---|\n"
    "| binarised CIFAR-100, ResNet92→ResNet56 | 72.87 | — "
    "| agglomerative 76.84, k-means 77.03, t-SNE+k-means 77.59 | **79.91** | 86.42 |\n"
    "| Amazon Reviews, 5 classes (teacher 77.58) | 75.13 | 76.28 | — | **78.06** | — |\n"
    "| Sentiment140-like, binary | 85.95 | 85.93 | — | **87.60** | — |\n"
    "| IMDB | — | 89.24 | — | **90.22** | — |\n"
    "| SST-2 | — | **92.85** | — | 92.81 | — |\n"
)


class Stat:
    """Mean ± sample std of a list of accuracies (in %)."""

    def __init__(self, values: list[float]):
        self.values = [100 * v for v in values]
        self.n = len(self.values)
        self.mean = statistics.fmean(self.values)
        self.std = statistics.stdev(self.values) if self.n > 1 else 0.0

    def __str__(self) -> str:
        return f"{self.mean:.2f} ± {self.std:.2f}"

    def diff(self, other: Stat) -> tuple[float, float]:
        """(difference of means, its standard error)."""
        return self.mean - other.mean, math.sqrt(self.std**2 / self.n + other.std**2 / other.n)


def verdict(delta: float, se: float) -> str:
    if se == 0 or abs(delta) <= 2 * se:
        return "within noise"
    return "win" if delta > 0 else "loss"


def group(records: list[dict]) -> dict:
    """(cell, method, hp as json) -> {seed: record} for tested runs."""
    out: dict = defaultdict(dict)
    for r in records:
        if r["identity"]["test"]:
            out[(r["cell"], r["method"], json.dumps(r["hp"], sort_keys=True))][r["seed"]] = r
    return out


def final_stats(records: list[dict], seeds: int) -> tuple[dict, dict, dict]:
    """({cell: {method: Stat}}, {cell: chosen hp}, {cell: teacher/majority test accuracy})."""
    by_key = {r["key"]: r for r in records}
    tested = group(records)
    stats, chosen_all, teacher = {}, {}, {}
    for name, cell in spec.CELLS.items():
        chosen, _ = choices(cell, by_key)
        cell_stats = {}
        for method in spec.methods_for(cell):
            if method not in chosen:
                continue
            runs = tested.get((name, method, json.dumps(chosen[method], sort_keys=True)), {})
            runs = [runs[s] for s in range(seeds) if s in runs]
            if runs:
                cell_stats[method] = Stat([r["metrics"]["test_accuracy"] for r in runs])
                teacher[name] = runs[0]["teacher"]
        if cell_stats:
            stats[name], chosen_all[name] = cell_stats, chosen
    return stats, chosen_all, teacher


def task_table(task: str, stats: dict, teacher: dict, peer_stats: dict | None = None) -> list[str]:
    """The task's cells (columns) with every method's and every peer's test accuracy (rows)."""
    cells = [c for c in spec.CELLS if c.startswith(task + "/") and c in stats]
    if not cells:
        return []
    peer_stats = peer_stats or {}
    heads = []
    for c in cells:
        cell = spec.CELLS[c]
        heads.append(f"{spec.TEACHERS[cell.teacher][0]} → {spec.STUDENTS[cell.student].label}; "
                     f"{spec.REGIMES[cell.regime][0]}")
    lines = [f"### {spec.TASKS[task].label}", "",
             "| method | " + " | ".join(heads) + " |", "|---|" + "---|" * len(cells)]
    peer_test = {c: {p: Stat(s.test) for p, s in peer_stats.get(c, {}).items()} for c in cells}
    best = {c: max([s.mean for m, s in stats[c].items() if m != "oracle"] + [s.mean for s in peer_test[c].values()])
            for c in cells}
    for method, entry in spec.METHODS.items():
        row = []
        for c in cells:
            s = stats[c].get(method)
            text = "—" if s is None else str(s)
            if s is not None and method != "oracle" and s.mean == best[c]:
                text = f"**{text}**"
            row.append(text)
        if any(x != "—" for x in row):
            lines.append(f"| {entry.label} | " + " | ".join(row) + " |")
    for peer, label in peers.PEERS.items():
        row = []
        for c in cells:
            s = peer_test[c].get(peer)
            short = "" if s is None or s.n >= max(m.n for m in stats[c].values()) else \
                f", {s.n} seed{'s' * (s.n > 1)} so far"  # a peer whose seeds are not all run yet says so
            text = "—" if s is None else f"{s} ({peer_stats[c][peer].mean_fit_s:.0f} s{short})"
            row.append(f"**{text}**" if s is not None and s.mean == best[c] else text)
        if any(x != "—" for x in row):
            lines.append(f"| *peer:* {label} | " + " | ".join(row) + " |")
    lines.append("| *teacher* | " + " | ".join(f"*{100 * teacher[c]['test_teacher_accuracy']:.2f}*"
                                            for c in cells) + " |")
    lines.append("| *majority class* | " + " | ".join(f"*{100 * teacher[c]['test_majority_class_rate']:.2f}*"
                                                   for c in cells) + " |")
    n = {s.n for c in cells for s in stats[c].values()}
    n |= {s.n for c in cells for s in peer_test[c].values()}
    lines += ["", f"Test accuracy %, mean ± std over {', '.join(map(str, sorted(n)))} seeds; bold: the best "
              "row per column (the oracle excluded: it reads the true hidden subclasses). *Peer* rows are other "
              "libraries trained on the cell's labeled rows, with their mean training seconds (one thread)."]
    return lines + [""]


def peer_table(records: list[dict], seeds: int) -> list[str]:
    """Every peer result: per (task, regime, peer, encoder, options), its seeds' test accuracy and macro-F1,
    validation accuracy, training seconds, CPU and the grid cells it is a row of."""
    groups: dict = defaultdict(list)
    for r in records:
        if r["seed"] < seeds:
            groups[(r["task"], r["regime"], r["peer"], r["encoder"], json.dumps(r["options"]))].append(r)
    if not groups:
        return []
    cells_of: dict = defaultdict(list)  # a peer run's key → the cells it is a row of
    for name, cell in spec.CELLS.items():
        for run in peers.runs_for(cell, seeds):
            cells_of[run.key].append(name)
    lines = ["| task / regime | peer | encoder | options | n | test accuracy % | test macro-F1 % "
             "| validation accuracy % | training s (mean) | CPU | row of |", "|---|" + "---|" * 10]
    for (task, regime, peer, encoder, options), rs in sorted(groups.items()):
        figures = [str(Stat([r["metrics"][k] for r in rs])) for k in ("test_accuracy", "test_macro_f1", "val_accuracy")]
        cpus = ", ".join(sorted({r["machine"]["cpu"] for r in rs}))
        lines.append(f"| {task} / {regime} | {peer} | {encoder} | {options} | {len(rs)} | " + " | ".join(figures)
                     + f" | {statistics.fmean(r['fit_s'] for r in rs):.1f} | {cpus} "
                     f"| {', '.join(cells_of[rs[0]['key']]) or '—'} |")
    return lines + [""]


def delta(s: dict, a: str, b: str) -> str:
    """Method a − method b in one cell's stats: mean ± SE of the difference and its verdict ("—" if missing)."""
    if a not in s or b not in s:
        return "—"
    d, se = s[a].diff(s[b])
    return f"{d:+.2f} ± {se:.2f} ({verdict(d, se)})"


def comparisons(stats: dict) -> list[str]:
    lines = ["| cell | KD | LELP − KD | best other strategy − KD | LELP − random split | LELP α=0.5 − KD α=0.5 "
             "| LELP − student alone | KD → oracle gap closed by LELP |",
             "|---|---|---|---|---|---|---|---|"]
    strategies = ("subclass_distillation", "pca", "random_projection", "kmeans", "gmm")
    for c, s in stats.items():
        if "kd" not in s or "lelp" not in s:
            continue
        others = [(s[m].mean, m) for m in strategies if m in s]
        other_text = f"{max(others)[1]}: {delta(s, max(others)[1], 'kd')}" if others else "—"
        gap = "—"
        if "oracle" in s:
            gap = f"{100 * (s['lelp'].mean - s['kd'].mean) / (s['oracle'].mean - s['kd'].mean):.0f}%" \
                if oracle_beats_kd(s) else "no gap: the oracle does not beat KD"
        lines.append(f"| {c} | {s['kd']} | {delta(s, 'lelp', 'kd')} | {other_text} "
                     f"| {delta(s, 'lelp', 'random_split')} "
                     f"| {delta(s, 'lelp_alpha', 'kd_alpha')} | {delta(s, 'lelp', 'ce')} | {gap} |")
    return lines + ["", "± here is the standard error of the difference; a win or loss needs |Δ| > 2 SE.", ""]


def oracle_beats_kd(s: dict) -> bool:
    """Whether the KD → oracle gap is real (beyond noise): shares of a gap within noise mean nothing."""
    return verdict(*s["oracle"].diff(s["kd"])) == "win"


def gap_table(stats: dict) -> list[str]:
    """Per method (rows) and cell with a real KD → oracle gap (columns): the share of the gap it closes."""
    cells = [c for c, s in stats.items() if "oracle" in s and "kd" in s and oracle_beats_kd(s)]
    if not cells:
        return []
    lines = ["Share of the KD → oracle gap each method closes ((method − KD) / (oracle − KD), by means):", "",
             "| method | " + " | ".join(cells) + " |", "|---|" + "---|" * len(cells),
             "| *KD → oracle* | " + " | ".join(f"*{stats[c]['kd'].mean:.2f} → {stats[c]['oracle'].mean:.2f}*"
                                             for c in cells) + " |"]
    gap = {c: stats[c]["oracle"].mean - stats[c]["kd"].mean for c in cells}
    for method, entry in spec.METHODS.items():
        if method in ("ce", "kd", "oracle") or not any(method in stats[c] for c in cells):
            continue
        row = [f"{100 * (stats[c][method].mean - stats[c]['kd'].mean) / gap[c]:+.0f}%"
               if method in stats[c] else "—" for c in cells]
        lines.append(f"| {entry.label} | " + " | ".join(row) + " |")
    return lines + [""]


def wins_table(stats: dict) -> list[str]:
    """Per cell: every method that beats KD beyond noise, and the best non-oracle method."""
    lines = ["| cell | KD | methods above KD beyond noise (Δ ± SE) | best non-oracle method |", "|---|---|---|---|"]
    count = 0
    for c, s in stats.items():
        if "kd" not in s:
            continue
        wins = []
        for method in s:
            if method in ("kd", "oracle"):
                continue
            d, se = s[method].diff(s["kd"])
            if verdict(d, se) == "win":
                wins.append((d, f"{spec.METHODS[method].label} {d:+.2f} ± {se:.2f}"))
        best = max((m for m in s if m != "oracle"), key=lambda m: s[m].mean)
        count += bool(wins)
        listed = "; ".join(text for _, text in sorted(wins, reverse=True)) or "none"
        lines.append(f"| {c} | {s['kd']} | {listed} | {spec.METHODS[best].label}: {s[best]} |")
    return [f"Some method beats KD beyond noise in {count} of {sum('kd' in s for s in stats.values())} cells.", "",
            *lines, ""]


def representation_tables(stats: dict) -> list[str]:
    """Per cell, LELP, k-means, GMM and the ensemble on the final layer's input and the teacher's other
    representation, each with KD's τ and with its own."""
    lines = []
    for c, s in stats.items():
        if not any(f"{m}@repr" in s for m in spec.REPRESENTATION_METHODS):
            continue
        other = spec.REPRESENTATION_LABELS[spec.TEACHERS[spec.CELLS[c].teacher][2]]
        columns = [("", "final layer's input, KD's τ"), ("+tau", "final layer's input, own τ"),
                   ("@repr", f"{other}, KD's τ"), ("@repr+tau", f"{other}, own τ")]
        best = max(s[m + suffix].mean for m in spec.REPRESENTATION_METHODS for suffix, _ in columns if m + suffix in s)
        lines += [f"### {c}", "", "| method | " + " | ".join(label for _, label in columns) + " |",
                  "|---|" + "---|" * len(columns)]
        for m in spec.REPRESENTATION_METHODS:
            row = []
            for suffix, _ in columns:
                stat = s.get(m + suffix)
                row.append("—" if stat is None else f"**{stat}**" if stat.mean == best else str(stat))
            lines.append(f"| {spec.METHODS[m].label} | " + " | ".join(row) + " |")
        reference = ", ".join(f"{name} {s[key]}" for key, name in (("kd", "KD"), ("oracle", "oracle")) if key in s)
        lines += ["", f"For reference: {reference}.", ""]
    return lines


def subclass_tables() -> list[str]:
    """From ``subclasses.py``'s records: each method's pseudo-subclasses against the true hidden subclasses."""
    lines = []
    for path in sorted(SUBCLASSES.glob("*.json")):
        record = json.loads(path.read_text())
        methods = record["methods"]
        classes = list(next(iter(methods.values()))["report"])
        lines += [f"### {record['cell']} (training split, seed 0, each method's selected S)", "",
                  "| method | S | NMI with the true subclasses | purity | pseudo-subclass sizes |",
                  "|---|---|---|---|---|"]
        for method, entry in methods.items():
            report = entry["report"]
            lines.append(f"| {spec.METHODS[method].label} | {len(report[classes[0]]['sizes'])} | "
                         + " / ".join(f"{report[c]['nmi']:.2f}" for c in classes) + " | "
                         + " / ".join(f"{report[c]['purity']:.2f}" for c in classes) + " | "
                         + " / ".join(str(report[c]["sizes"]) for c in classes) + " |")
        best = max((m for m in methods if m != "oracle"),
                   key=lambda m: sum(methods[m]["report"][c]["nmi"] for c in classes))
        lines += ["", f"Per class ({' / '.join(classes)}). The closest to the true subclasses: "
                  f"{spec.METHODS[best].label}; its most distinctive n-grams per pseudo-subclass of class "
                  f"{classes[0]}:", ""]
        lines += [f"- {', '.join(ngrams[:5])}" for ngrams in methods[best]["report"][classes[0]].get("ngrams", [])]
        lines.append("")
    return lines


def hp_table(chosen: dict) -> list[str]:
    lines = ["| cell | " + " | ".join(spec.METHODS) + " |", "|---|" + "---|" * len(spec.METHODS)]
    for c, ch in chosen.items():
        row = []
        for m in spec.METHODS:
            hp = ch.get(m)
            row.append("—" if hp is None else ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                                         for k, v in hp.items()))
        lines.append(f"| {c} | " + " | ".join(row) + " |")
    return lines + [""]


def ablation_stats(records: list[dict], chosen: dict, seeds: int) -> dict:
    """{cell: {ablation: [(value, Stat)]}} around LELP's chosen configuration."""
    tested = group(records)
    out = {}
    for c in spec.ABLATION_CELLS:
        if c not in chosen:
            continue
        base = chosen[c]["lelp"]
        per = {}
        for name, variants in spec.ABLATIONS.items():
            points = []
            values = variants if name in ("S", "beta") else [{}] + variants
            for change in values:
                hp = {**base, **change}
                runs = tested.get((c, "lelp", json.dumps(hp, sort_keys=True)), {})
                runs = [runs[s] for s in range(seeds) if s in runs]
                if runs:
                    if name in ("S", "beta"):
                        label = change[name]
                    elif name == "null_space":
                        label = "off" if change else "on (default)"
                    else:
                        label = change[name] if change else "per_class (default)"
                    points.append((label, Stat([r["metrics"]["test_accuracy"] for r in runs])))
            per[name] = points
        out[c] = per
    return out


def plots(stats: dict, ablations: dict, kd: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    PLOTS.mkdir(parents=True, exist_ok=True)
    lines = []
    for c, per in ablations.items():
        slug = c.replace("/", "__")
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
        for ax, name, xlabel in ((axes[0], "S", "S (pseudo-subclasses per class)"), (axes[1], "beta", "β")):
            points = per.get(name, [])
            if not points:
                continue
            xs = [p[0] for p in points]
            ax.errorbar(xs, [p[1].mean for p in points], yerr=[p[1].std for p in points], marker="o", capsize=3,
                        label="LELP")
            if c in kd:
                ax.axhline(kd[c].mean, color="grey", ls="--", label="vanilla KD")
            ax.set_xscale("log", base=2)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("test accuracy %")
            ax.legend(fontsize=8)
        fig.suptitle(c, fontsize=9)
        fig.tight_layout()
        path = PLOTS / f"ablation__{slug}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        lines.append(f"![LELP accuracy vs S and β on {c}]({path.relative_to(OUT.parent)})")
    for c, s in stats.items():
        methods = [m for m in spec.METHODS if m in s]
        fig, ax = plt.subplots(figsize=(9, 3.4))
        ax.bar(range(len(methods)), [s[m].mean for m in methods], yerr=[s[m].std for m in methods], capsize=3,
               color=["tab:red" if m.startswith("lelp") else "tab:grey" if m in ("ce", "kd") else "tab:blue"
                      for m in methods])
        ax.set_xticks(range(len(methods)), methods, rotation=35, ha="right", fontsize=8)
        low = min(s[m].mean - s[m].std for m in methods)
        high = max(s[m].mean + s[m].std for m in methods)
        ax.set_ylim(low - 0.15 * (high - low) - 0.5, high + 0.1 * (high - low) + 0.2)
        ax.set_ylabel("test accuracy %")
        ax.set_title(c, fontsize=9)
        fig.tight_layout()
        path = PLOTS / f"methods__{c.replace('/', '__')}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        lines.append(f"![every method on {c}]({path.relative_to(OUT.parent)})")
    return lines


def teacher_readings(records: list[dict]) -> list[str]:
    """Cells whose final runs read more than one teacher pass: the same teacher's cache, rebuilt on another CPU,
    rounds differently (a bf16 encoder pass most of all), so methods run on different machines compare students
    of slightly different teachers."""
    by_cell: dict = defaultdict(lambda: defaultdict(lambda: (set(), set())))
    for r in records:
        if r["phase"] == "final":
            reading = (round(100 * r["teacher"]["val_teacher_accuracy"], 2),
                       round(100 * r["teacher"]["test_teacher_accuracy"], 2))
            cpus, methods = by_cell[r["cell"]][reading]
            cpus.add(r["machine"]["cpu"])
            methods.add(r["method"])
    lines = []
    for cell, readings in sorted(by_cell.items()):
        if len(readings) < 2:
            continue
        parts = [f"val {val:.2f} / test {test:.2f} on {', '.join(sorted(cpus))}: {', '.join(sorted(methods))}"
                 for (val, test), (cpus, methods) in sorted(readings.items())]
        lines.append(f"| {cell} | " + "<br>".join(parts) + " |")
    if not lines:
        return ["Every cell's final runs read one teacher pass.", ""]
    return ["Cells whose final runs read more than one teacher pass (the cache rebuilt on another CPU, which rounds "
            "differently): teacher accuracy % (validation / test) each group read, where it ran, and its methods. "
            "Differences between methods of different groups carry the teachers' difference too.", "",
            "| cell | teacher readings: methods |", "|---|---|", *lines, ""]


def cost(records: list[dict]) -> list[str]:
    by_phase: dict = defaultdict(lambda: [0, 0.0])
    for r in records:
        by_phase[r["phase"]][0] += 1
        by_phase[r["phase"]][1] += r["wall_s"]
    prepare = [json.loads(p.read_text()) for p in sorted(PREPARE.glob("*.json"))]
    workers = {r.get("workers") for r in records if r.get("workers")} or {2}
    total = sum(v[1] for v in by_phase.values())
    lines = ["| phase | runs | run-seconds (sum over runs) |", "|---|---|---|"]
    lines += [f"| {p} | {n} | {s:,.0f} |" for p, (n, s) in by_phase.items()]
    lines += [f"| all | {len(records)} | {total:,.0f} |", ""]
    if records:
        machines = sorted({f"{r['machine']['cpu']} ({r['machine']['cores']} cores)" for r in records})
        default = sum(r["wall_s"] for r in records if r["cell"] not in spec.LEGACY)
        lines.append(f"Runs went {max(workers)} at a time, one thread each, on {', '.join(machines)}: about "
                     f"{default / max(workers) / 3600:.2f} h of wall time for the grid as `benchmarks.accuracy.grid` "
                     "runs it by default "
                     f"(sum of run times / workers, caches excluded), {total / max(workers) / 3600:.2f} h with the "
                     "legacy dense-bag cells. Each run's time is from the code and CPU it ran on: runs of the bag "
                     "recorded before the faster lazy-Adam step (git de33df8) took longer than they "
                     "would now.")
    if prepare:
        built = ", ".join(f"{p['cell']} {p['seconds']:.0f} s" for p in prepare if p["seconds"] > 5)
        lines.append(f"Building the caches (teacher passes, heads, student features; once): "
                     f"{sum(p['seconds'] for p in prepare) / 60:.1f} min over {len(prepare)} cells ({built}).")
    return lines + [""]


def current(records: list[dict], seeds: int) -> list[dict]:
    """The records the grid's plan names now (a record of a candidate no longer in the grid is ignored)."""
    by_key = {r["key"]: r for r in records}
    named = {run.key for runs in plan(list(spec.CELLS.values()), seeds, by_key).values() for run in runs}
    return [r for r in records if r["key"] in named]


def gap_share(s: dict, method: str) -> float:
    """The share (%) of the KD → oracle gap ``method`` closes in one cell's stats, by means."""
    return 100 * (s[method].mean - s["kd"].mean) / (s["oracle"].mean - s["kd"].mean)


def summary(seeds: int = 3) -> str:
    """The README's paragraph on the grid: every number from the records, as RESULTS.md's tables have it.

    Over the cells the grid runs by default: where LELP and LELP α = 0.5 beat their KD beyond noise, the best
    method per cell, the KD → oracle gap closed where it is real, and the largest gain of a method's own τ."""
    records = [r for r in current(spec.load_records(), seeds) if r["cell"] not in spec.LEGACY]
    stats = {c: s for c, s in final_stats(records, seeds)[0].items() if "kd" in s and "lelp" in s}
    workers = max({r.get("workers") or 2 for r in records})
    runtime = sum(r["wall_s"] for r in records) / workers / 3600

    def compare(a: str, b: str) -> tuple[list[str], int, int]:
        """(the cells where a beats b, as "cell +Δ"), how many are within noise, how many losses."""
        found = {c: (*s[a].diff(s[b]),) for c, s in stats.items() if a in s and b in s}
        wins = [f"{c} {d:+.2f}" for c, (d, se) in found.items() if verdict(d, se) == "win"]
        losses = sum(verdict(d, se) == "loss" for d, se in found.values())
        return wins, len(found) - len(wins) - losses, losses

    wins, ties, losses = compare("lelp", "kd")
    alpha_wins, _, _ = compare("lelp_alpha", "kd_alpha")
    alpha_deltas = [float(w.rsplit(" ", 1)[1]) for w in alpha_wins]
    best = []
    for c, s in stats.items():
        m = max((m for m in s if m != "oracle"), key=lambda m: s[m].mean)
        d, se = s[m].diff(s["kd"])
        best.append(f"{c}: {spec.METHODS[m].label} {s[m].mean:.2f} ({d:+.2f} ± {se:.2f} against KD, {verdict(d, se)})")
    gaps = []
    for c, s in stats.items():
        if "oracle" in s and oracle_beats_kd(s):
            top = max((m for m in s if m not in ("kd", "oracle")), key=lambda m: s[m].mean)
            gaps.append(f"{gap_share(s, 'lelp'):.0f}% on {c} (the best method, {spec.METHODS[top].label}, "
                        f"{gap_share(s, top):.0f}%)")
    own = [(s[m + "+tau"].mean - s[m].mean, c, m) for c, s in stats.items() for m in spec.REPRESENTATION_METHODS
           if m in s and m + "+tau" in s]
    gain, cell, method = max(own)
    text = (f"In short, over the {len(stats)} cells the grid runs by default ({runtime:.2f} h of runs, {workers} at a "
            f"time, caches excluded): LELP beats vanilla KD beyond noise in {len(wins)} "
            f"({'; '.join(wins) or 'none'}), is within noise in {ties} and below it in {losses}; with α = 0.5 it beats "
            f"KD α = 0.5 in {len(alpha_wins)} of "
            f"{len(stats)}" + (f" ({min(alpha_deltas):+.2f} to {max(alpha_deltas):+.2f})" if alpha_deltas else "")
            + ". The best method of each cell (the oracle aside): " + "; ".join(best) + ". ")
    if gaps:
        text += ("Where the oracle's true hidden subclasses beat KD beyond noise, LELP closes " + " and ".join(gaps)
                 + " of the KD → oracle gap. ")
    return text + (f"Every method starts from KD's τ and LELP, k-means, GMM and the ensemble also choose their own: "
                   f"the largest gain is {spec.METHODS[method].label} on {cell}, {stats[cell][method].mean:.2f} at "
                   f"KD's τ, {stats[cell][method + '+tau'].mean:.2f} with its own ({gain:+.2f}).")


def validation_pick(cell: str, chosen: dict, by_key: dict) -> str | None:
    """The method whose selected configuration scored best on validation (seed 0) in ``cell``: what a user who
    compares the grid's methods on validation only would ship (the oracle excluded; ties to grid order)."""
    scored = {}
    for method, hp in chosen.items():
        run = spec.make_run(spec.CELLS[cell], method, hp, 0, False, "select")
        if method != "oracle" and run.key in by_key:
            scored[method] = by_key[run.key]["metrics"]["val_accuracy"]
    return max(scored, key=lambda m: scored[m]) if scored else None


def student_cells(students: tuple[str, ...], seeds: int):
    """The finished cells of ``students`` (student alone and KD tested): (cell, its methods' Stats, the method chosen
    on validation, the teacher's test %, each peer's test Stat by name, the cell's records)."""
    records = current(spec.load_records(), seeds)
    by_key = {r["key"]: r for r in records}
    stats, chosen, teacher = final_stats(records, seeds)
    peer_stats = peers.cell_stats(peers.load_records(), seeds)
    for c, s in stats.items():
        if spec.CELLS[c].student not in students or not {"ce", "kd"} <= set(s):
            continue
        pick = validation_pick(c, chosen[c], by_key)
        if pick in s:
            yield (c, s, pick, 100 * teacher[c]["test_teacher_accuracy"],
                   {p: Stat(ps.test) for p, ps in peer_stats.get(c, {}).items()},
                   [r for r in records if r["cell"] == c])


def static_summary(seeds: int = 3) -> str:
    """The README's paragraph on the static-embedding student: per measured cell, the method chosen on validation
    against model2vec alone (the peer), the student trained on its labels alone, KD and the teacher."""
    parts = []
    for c, s, pick, teacher, peer_test, _ in student_cells(("static",), seeds):
        text = (f"{c}: {spec.METHODS[pick].label} {s[pick]} (teacher {teacher:.2f}; "
                f"KD {s['kd']}; the student on its labels alone {s['ce']}, {verdict(*s[pick].diff(s['ce']))} "
                f"{s[pick].diff(s['ce'])[0]:+.2f}")
        peer = peer_test.get("model2vec")
        if peer is not None:
            d, se = s[pick].diff(peer)
            text += f"; model2vec alone {peer}, {verdict(d, se)} {d:+.2f} ± {se:.2f}"
        parts.append(text + ")")
    if not parts:
        return "The static-embedding student has no finished grid cell yet."
    return ("The static-embedding student (configs/student/static.yaml), test accuracy % over 3 seeds, the method "
            "chosen on validation among the grid's ten for it, against the student alone and model2vec alone "
            "(its `StaticModelForClassification` on the labels, same table, same rows): " + "; ".join(parts) + ".")


def transformer_summary(seeds: int = 3) -> str:
    """The README's paragraph on the transformer student: per measured cell, every method's test accuracy (best
    first), the one chosen on validation against KD, the student alone and the peers, what a run cost, and the same
    cell keeping the first layers where it ran."""
    parts = []
    cells = list(student_cells(("transformer", "transformer_first"), seeds))
    first_layers = {c: s for c, s, *_ in cells if spec.CELLS[c].student == "transformer_first"}
    for c, s, pick, teacher, peer_test, cell_records in cells:
        cell = spec.CELLS[c]
        if cell.student != "transformer":
            continue
        ranked = ", ".join(f"{spec.METHODS[m].label} {s[m]}" for m in sorted(s, key=lambda m: -s[m].mean))
        text = (f"{c} (teacher {teacher:.2f}; {len(s)} methods, best first: "
                f"{ranked}): chosen on validation, {spec.METHODS[pick].label}, against KD "
                f"{verdict(*s[pick].diff(s['kd']))} {s[pick].diff(s['kd'])[0]:+.2f}, against the student alone "
                f"{verdict(*s[pick].diff(s['ce']))} {s[pick].diff(s['ce'])[0]:+.2f}")
        for name, label in (("model2vec", "model2vec alone"), ("setfit", "SetFit")):
            if name in peer_test:
                d, se = s[pick].diff(peer_test[name])
                text += f", against {label} ({peer_test[name]}) {verdict(d, se)} {d:+.2f} ± {se:.2f}"
        walls = [r["wall_s"] for r in cell_records]
        text += (f"; {len(walls)} runs of {statistics.fmean(walls) / 60:.1f} min on average "
                 f"({sum(walls) / 3600:.1f} h of one core)")
        first = first_layers.get(spec.Cell(cell.task, cell.teacher, "transformer_first", cell.regime).name)
        if first is not None:  # the same cell keeping layers 0, 1, 2: which layers to keep
            text += "; keeping layers 0, 1 and 2 instead (`layers: first`): " + ", ".join(
                f"{spec.METHODS[m].label} {first[m]} ({verdict(*first[m].diff(s[m]))} "
                f"{first[m].diff(s[m])[0]:+.2f} against layers 0, 2, 4)" for m in ("ce", "kd"))
        parts.append(text)
    if not parts:
        return "The transformer student has no finished grid cell yet."
    return ("The transformer student (configs/student/transformer.yaml: all-MiniLM-L6-v2's layers 0, 2 and 4, "
            "fine-tuned), test accuracy % over 3 seeds, each method selected on validation (lean selection): "
            + "; ".join(parts) + ".")


def page(seeds: int = 3) -> list[str]:
    """The grid's lines of RESULTS.md (the plots written beside it)."""
    records = current(spec.load_records(), seeds)
    stats, chosen, teacher = final_stats(records, seeds)
    kd = {c: s["kd"] for c, s in stats.items() if "kd" in s}
    ablations = ablation_stats(records, chosen, seeds)
    lines = ["# Accuracy benchmark: does LELP beat vanilla KD on real few-class data?", "",
             "Generated by `python -m benchmarks.report` from the JSON records in `benchmarks/results/accuracy/`; "
             "do not edit by hand. Reproduce everything (caches, grid, this page) with:", "",
             "    bash scripts/setup.sh && .venv/bin/python -m benchmarks.accuracy.grid "
             "&& .venv/bin/python -m benchmarks.report", "",
             "## Protocol", "",
             "- Cells: task × teacher → student × regime (below). The teacher is trained once per cell (seed 0) on "
             "the labeled training rows; students distil on every training row with the teacher's outputs.",
             f"- Regimes: *supervised* (every training row labeled; α = 0 as in the paper, plus α = 0.5 for KD and "
             f"LELP) and *few labels* ({spec.FEW_LABELS:,} labeled training rows train the teacher; the student "
             "distils on all training rows; \"student alone\" trains on those labeled rows only).",
             f"- Selection on the validation split only, seed 0: student alone: learning rate × {spec.LR_FACTORS}; "
             f"KD: τ ∈ {spec.TAUS} × the same learning rates; every other method uses KD's learning rate and τ; "
             f"strategies pick S ∈ {spec.S_GRID} at β = 1; LELP picks S × β ∈ {spec.S_GRID} × {spec.BETAS}; KD α = 0.5 "
             "and FitNets reuse KD's choice, LELP α = 0.5 LELP's; the oracle's S is the true number of hidden "
             "subclasses. The test split is read once per final configuration and seed. *Lean selection* (the "
             "transformer student, minutes per run): KD picks τ at the student alone's chosen learning rate and LELP "
             "picks S at β = 1, as the other strategies do.",
             f"- Each method's own temperature (stage 3): LELP, k-means, GMM and the ensemble of random projections "
             f"also pick τ ∈ {spec.TAUS} (GMM: τ × β ∈ {spec.TAUS} × {spec.BETAS}) at their selected S, on validation "
             "(rows marked *own τ*). *On the other representation*: the same method fitted on the teacher's other "
             "representation (`data.representation`; the strategy sees the least-squares map from it to the teacher's "
             "logits as its classifier), selected the same way.",
             "- Bag cells: *sparse lazy Adam* is the student as shipped (sparse embedding gradients); the "
             "*dense AdamW* cells are the records measured before the sparse path existed, with the methods of that "
             "time, kept as they were (not rerun by default).",
             "- Fine-tuned teacher: all-MiniLM-L6-v2 fine-tuned end to end as a sequence classifier by the framework "
             "(configs/teacher/minilm_finetuned.yaml) on the labeled training rows; CNN, 15 epochs: the CNN teacher "
             "trained five times longer than the 3-epoch one.",
             f"- Final runs and ablations: {seeds} seeds (student init, batch order, strategy seed); the last epoch is "
             "reported; teacher accuracy beside it.",
             "- Teacher passes: the all-mpnet-base-v2 cells marked *bf16 pass* were built on an Intel Xeon with native "
             "bf16; *fp32 pass* marks a cell built on an AVX2-only AMD EPYC, where bf16 autocast is 6.3× slower than "
             "fp32 (every run of that cell, selection included, uses the fp32 teacher).", ""]
    lines += ["## Results per task", ""]
    peer_records = peers.load_records()
    peer_stats = peers.cell_stats(peer_records, seeds)
    for task in spec.TASKS:
        lines += task_table(task, stats, teacher, peer_stats)
    lines += ["## LELP against vanilla KD and the other strategies", ""] + comparisons(stats)
    lines += ["## Which methods beat vanilla KD", ""] + wins_table(stats) + gap_table(stats)
    lines += ["## The teacher representation the strategies read, and each method's own τ", "",
              "LELP, k-means, GMM and the ensemble of random projections on the input of the teacher's final layer "
              "and on its other representation (the frozen encoder's output for encoder + head teachers, the mean "
              "of the last hidden states for the fine-tuned teacher, the conv features of the CNN), with KD's τ and "
              f"with their own τ ∈ {spec.TAUS} (and β ∈ {spec.BETAS} for GMM) chosen on validation after their S.",
              ""] + representation_tables(stats)
    peer_lines = peer_table(peer_records, seeds)
    if peer_lines:
        lines += ["## Peers: model2vec and SetFit on the grid's splits (`python -m benchmarks.accuracy.peers`)", "",
                  "Each peer trains on a cell's labeled training rows (no teacher), validates on its validation rows "
                  "and is tested once per seed on its test rows, the rows the grid's runs read; one thread. "
                  "model2vec: the teacher's encoder distilled by model2vec (PCA 256, the static student's table), "
                  "then its `StaticModelForClassification` with its defaults (early stopping on the validation "
                  "rows). SetFit: the all-MiniLM-L6-v2 body and a logistic-regression head, on the few-label "
                  f"cells, its defaults except num_iterations n = {peers.SETFIT_OPTIONS['num_iterations']} (2n "
                  "sentence pairs per labeled row; the SetFit paper's n = 20 costs 4× as much). "
                  "Training seconds exclude the distillation (a cache, built once per encoder).", ""] + peer_lines
    subclasses = subclass_tables()
    if subclasses:
        lines += ["## What the pseudo-subclasses are (`python -m benchmarks.accuracy.subclasses`)", ""] + subclasses
    if ablations:
        lines += ["## Ablations (LELP's selected configuration, one option changed)", ""]
        for c, per in ablations.items():
            lines += [f"### {c}", "", "| ablation | value | test accuracy % |", "|---|---|---|"]
            for name, points in per.items():
                lines += [f"| {name} | {v} | {s} |" for v, s in points]
            lines.append("")
    lines += ["## Plots", ""] + plots(stats, ablations, kd) + [""]
    lines += ["## Selected hyper-parameters (validation, seed 0)", ""] + hp_table(chosen)
    lines += ["## Teacher passes each cell's runs read", ""] + teacher_readings(records)
    lines += ["## Cost", ""] + cost(records)
    lines += ["## The paper, for comparison", "", PAPER, ""]
    return lines
