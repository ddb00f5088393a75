"""What the serving tests share: a real fit exported through `lelp export`, the eager reference, the import check."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from helpers import LELP, run_main


@dataclass
class Exported:
    config: Path
    ckpt: Path
    folder: Path


def fit_and_export(root: Path, *fit_args: str, bench_seconds: float = 0.0) -> Exported:
    """``lelp fit`` with ``fit_args`` (its run under ``root``), then ``lelp export`` of its last checkpoint, in process
    (the card's speed measured for ``bench_seconds`` each, or not at all)."""
    ran = run_main("fit", *fit_args)
    assert ran.returncode == 0, ran.stderr[-3000:]
    config = next(root.rglob("version_0/config.yaml"))
    ckpt = config.parent / "checkpoints" / "last.ckpt"
    folder = root / "student"
    ran = run_main("export", "--config", str(config), "--ckpt_path", str(ckpt), "--output", str(folder),
                   "--bench_seconds", str(bench_seconds))
    assert ran.returncode == 0, ran.stderr[-3000:]
    return Exported(config, ckpt, folder)


def eager_test_probabilities(exported: Exported) -> tuple[np.ndarray, object]:
    """The trained student in PyTorch on the run's test split, as its data module feeds it (cached features
    included), and that split's raw rows."""
    import torch

    from lelp_lightning.serving.export import load_student

    model, datamodule, _ = load_student(exported.config, exported.ckpt)
    datamodule.setup()
    dataset = datamodule.dataset("test")
    batch = dataset[np.arange(len(dataset))]
    with torch.no_grad():
        probabilities = torch.softmax(model.class_logits(batch["inputs"]), dim=-1).numpy()
    np.testing.assert_array_equal(batch["label"].numpy(), datamodule.source.split("test").labels)
    return probabilities, datamodule.source.split("test")


def assert_matches_eager(exported: Exported) -> None:
    """The exported student's probabilities equal eager PyTorch's within 1e-5 on the test split, same predictions."""
    from lelp_lightning.serving import Predictor

    eager, test = eager_test_probabilities(exported)
    predictor = Predictor.load(exported.folder)
    served = predictor.predict_proba(test.texts)
    assert served.shape == eager.shape == (len(test), len(predictor.labels))
    np.testing.assert_allclose(served, eager, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(served.argmax(1), eager.argmax(1))
    assert predictor.predict(test.texts[:3]) == [predictor.labels[i] for i in eager[:3].argmax(1)]
    card = json.loads((exported.folder / "model_card.json").read_text())
    assert card["accuracy"]["exported_test"] == (eager.argmax(1) == test.labels).mean()


HEAVY = ("torch", "lightning", "pytorch_lightning", "lightning_fabric", "sklearn", "transformers")


def modules_imported_by_prediction(folder: Path, inputs_code: str) -> tuple[list[str], list[list[float]]]:
    """In a fresh interpreter: load the export with the predictor and predict ``inputs_code``; which of ``HEAVY``
    got imported, and the probabilities."""
    script = ("import json, sys\nimport numpy as np\nfrom lelp_lightning.serving import Predictor\n"
              f"p = Predictor.load(sys.argv[1]).predict_proba({inputs_code})\n"
              f"print(json.dumps([[m for m in {HEAVY!r} if m in sys.modules], p.tolist()]))\n")
    proc = subprocess.run([sys.executable, "-c", script, str(folder)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serving(folder: Path, log: Path, *options: str) -> Iterator[tuple[subprocess.Popen, int]]:
    """``lelp serve folder`` on a free port of 127.0.0.1, in its own process group, its stderr in ``log``: yields
    (process, port) once ``/health`` answers ok (60 s at most); then SIGINT to the group (SIGKILL after 30 s)."""
    port = free_port()
    with log.open("w") as stderr:
        proc = subprocess.Popen([LELP, "serve", str(folder), "--port", str(port), *options],
                                stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as answer:
                    if answer.read() == b"ok":
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"lelp serve did not start: {log.read_text()[-3000:]}")
                time.sleep(0.2)
        yield proc, port
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
