"""No code runs from a checkpoint a user hands over: every load is ``torch.load(weights_only=True)``.

A checkpoint whose pickle would create a folder when unpickled is refused in one sentence (exit 2) by ``lelp
export``, ``lelp fit/validate/test/predict --ckpt_path`` and the fine-tuned teacher's resume, and the folder is
never created. The reference for "would create it" is plain ``torch.load(weights_only=False)`` in a subprocess."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import run_main, tiny_run_args, tiny_tweets

from lelp_lightning.checkpoints import load_checkpoint
from lelp_lightning.errors import LelpError


class _MakesAFolder:
    """Unpickling this calls ``os.makedirs(target)``: the stand-in for any code hidden in a pickle."""

    def __init__(self, target: Path):
        self.target = str(target)

    def __reduce__(self):
        return (os.makedirs, (self.target,))


def malicious_checkpoint(path: Path, target: Path) -> Path:
    torch.save({"state_dict": {}, "epoch": 0, "hyper_parameters": {}, "payload": _MakesAFolder(target)}, path)
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real tiny fit: its config and its genuine checkpoint."""
    root = tmp_path_factory.mktemp("safety")
    ran = run_main("fit", *tiny_run_args(root / "cache", root / "run", "--trainer.max_epochs", "1", wandb=False))
    assert ran.returncode == 0, ran.stderr[-3000:]
    config = next((root / "run").rglob("version_0/config.yaml"))
    return root, config, config.parent / "checkpoints" / "last.ckpt"


def test_the_stand_in_really_runs_code_when_unpickled_unsafely(tmp_path):
    """The reference: an unsafe load of the file creates the folder (so the refusals below mean something)."""
    target = tmp_path / "pwned"
    ckpt = malicious_checkpoint(tmp_path / "evil.ckpt", target)
    subprocess.run([sys.executable, "-c", f"import torch; torch.load({str(ckpt)!r}, weights_only=False)"],
                   check=True, cwd=Path(__file__).parent)
    assert target.is_dir()


def test_load_checkpoint_refuses_code_a_missing_file_and_a_non_checkpoint_in_one_sentence(tmp_path):
    target = tmp_path / "pwned"
    with pytest.raises(LelpError, match=r"holds Python objects other than tensors and plain values, which could run "
                                        r"code when loaded, so it was not loaded; expected a checkpoint\.$"):
        load_checkpoint(malicious_checkpoint(tmp_path / "evil.ckpt", target), "a checkpoint")
    assert not target.exists()
    with pytest.raises(LelpError, match=r"missing\.ckpt is not a file; expected a checkpoint\.$"):
        load_checkpoint(tmp_path / "missing.ckpt", "a checkpoint")
    (tmp_path / "notes.ckpt").write_text("not a checkpoint")
    with pytest.raises(LelpError, match=r"notes\.ckpt cannot be read as a checkpoint \(\w+\); expected a checkpoint"):
        load_checkpoint(tmp_path / "notes.ckpt", "a checkpoint")
    torch.save({"w": torch.ones(2)}, tmp_path / "plain.pt")
    assert torch.equal(load_checkpoint(tmp_path / "plain.pt", "a checkpoint")["w"], torch.ones(2))


def test_export_refuses_a_checkpoint_that_would_run_code(run, tmp_path):
    _, config, _ = run
    target = tmp_path / "pwned"
    evil = malicious_checkpoint(tmp_path / "evil.ckpt", target)
    ran = run_main("export", "--config", str(config), "--ckpt_path", str(evil), "--output", str(tmp_path / "out"))
    assert ran.returncode == 2
    assert "Traceback" not in ran.stderr
    assert [line for line in ran.stderr.splitlines() if line.startswith("lelp: error:")] == [
        f"lelp: error: {evil} holds Python objects other than tensors and plain values, which could run code when "
        "loaded, so it was not loaded; expected the .ckpt file a `lelp fit` run wrote (<run>/checkpoints/last.ckpt)."]
    assert not target.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["fit", "validate", "test", "predict"])
def test_a_run_refuses_a_checkpoint_that_would_run_code_before_any_data_work(run, command, tmp_path):
    root, config, _ = run
    target = tmp_path / "pwned"
    evil = malicious_checkpoint(tmp_path / "evil.ckpt", target)
    ran = run_main(command, "--config", str(config), "--ckpt_path", str(evil),
                   "--trainer.default_root_dir", str(tmp_path / "logs"))
    assert ran.returncode == 2, ran.stderr[-2000:]
    assert "Traceback" not in ran.stderr
    assert f"lelp: error: {evil} holds Python objects other than tensors" in ran.stderr
    assert not target.exists()
    assert "teacher cache" not in ran.stderr  # refused before the data stage


def test_a_run_refuses_weights_only_false_and_loads_its_own_checkpoint_safely(run, tmp_path):
    root, config, ckpt = run
    ran = run_main("validate", "--config", str(config), "--ckpt_path", str(ckpt), "--weights_only", "false")
    assert ran.returncode == 2
    assert ("lelp: error: --weights_only false is refused: lelp never loads a checkpoint in a way that can run code "
            "from it; leave weights_only unset (or true).") in ran.stderr
    ran = run_main("validate", "--config", str(config), "--ckpt_path", str(ckpt),
                   "--trainer.default_root_dir", str(tmp_path / "logs"))
    assert ran.returncode == 0, ran.stderr[-2000:]


def test_the_fine_tuned_teachers_resume_state_is_loaded_safely(tmp_path):
    """A resume state (``<entry>.partial/state.pt``) that would run code is refused before it loads."""
    from lelp_lightning.cache import TeacherCache, cache_key
    from lelp_lightning.teachers import FineTunedClassifierTeacher

    target = tmp_path / "pwned"
    teacher = FineTunedClassifierTeacher(base="all-MiniLM-L6-v2", epochs=1, seed=0)
    cache, source = TeacherCache(tmp_path / "cache"), tiny_tweets()
    partial = cache.root / f"finetuned-{cache_key(teacher.fingerprint(), source.fingerprint())}.partial"
    partial.mkdir(parents=True)
    malicious_checkpoint(partial / "state.pt", target)
    with pytest.raises(LelpError, match=r"state\.pt holds Python objects other than tensors and plain values, which "
                                        "could run code when loaded, so it was not loaded; expected the resume state "
                                        "an interrupted fine-tuning wrote; delete .* to start the fine-tuning again"):
        teacher.fit(source, cache)
    assert not target.exists()
