"""Speed of a predictor from raw input to probabilities: rows/s at a large batch, latency percentiles at batch 1.

Shared by the model card (``lelp export`` measures the exported student) and the student-vs-teacher benchmark;
needs neither torch nor onnxruntime.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence

import numpy as np


def cpu_name() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``platform.processor()`` where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """What the figures were measured on: CPU model, usable cores, OS."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu_name(), "cores": cores, "platform": platform.platform()}


def take(rows: Sequence, n: int) -> Sequence:
    """``n`` rows of ``rows``, cycling through them when there are fewer (a list, or an array for images)."""
    index = np.arange(n) % len(rows)
    return rows[index] if isinstance(rows, np.ndarray) else [rows[i] for i in index]


def measure(predict: Callable[[Sequence], object], rows: Sequence, batch_size: int = 256, seconds: float = 2.0,
            latency_calls: int = 200) -> dict:
    """``predict`` timed on ``rows``: rows/s over repeated batches of ``batch_size`` for about ``seconds`` (at least
    two batches, the first a warm-up left out), and p50 / p99 latency of single rows (up to ``latency_calls`` calls
    or about ``seconds``, after one warm-up call)."""
    batch = take(rows, batch_size)
    predict(batch)
    times: list[float] = []
    start = time.perf_counter()
    while not times or (time.perf_counter() - start < seconds and len(times) < 1000):
        t0 = time.perf_counter()
        predict(batch)
        times.append(time.perf_counter() - t0)
    singles = [rows[i % len(rows): i % len(rows) + 1] for i in range(latency_calls)]
    predict(singles[0])
    latencies: list[float] = []
    start = time.perf_counter()
    for single in singles:
        t0 = time.perf_counter()
        predict(single)
        latencies.append(time.perf_counter() - t0)
        if time.perf_counter() - start > seconds and len(latencies) >= 10:
            break
    ms = 1000 * np.asarray(latencies)
    return {"batch_size": batch_size, "rows_per_s": round(batch_size * len(times) / sum(times), 1),
            "batches": len(times), "latency_ms_p50": round(float(np.percentile(ms, 50)), 3),
            "latency_ms_p99": round(float(np.percentile(ms, 99)), 3), "latency_calls": len(latencies)}
