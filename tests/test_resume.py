"""A training run resumed from a mid-run checkpoint continues exactly; a mismatched resume is refused."""

import json
import re
import shutil

import pandas as pd
import pytest
import torch
from helpers import run_lelp, tiny_run_args

from lelp_lightning.cli import main

CHECKPOINT_EVERY_EPOCH = """trainer:
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {filename: "{epoch}", save_top_k: -1, every_n_epochs: 1, save_last: true}
"""
RUN = ("--model.student.init_args.dropout", "0.3",  # dropout: torch's RNG is part of what must continue
       "--model.lr", "0.05", "--data.strategy.num_subclasses", "2", "--trainer.max_epochs", "3")


def fit(cache_dir, run_dir, *extra):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "checkpoints.yaml").write_text(CHECKPOINT_EVERY_EPOCH)
    proc = run_lelp("fit", *tiny_run_args(cache_dir, run_dir, *RUN, "--config", str(run_dir / "checkpoints.yaml"),
                                          *extra, wandb=False), cwd=run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir / "tiny" / "version_0", proc


@pytest.fixture(scope="module")
def straight_and_resumed(tweets_cache_dir, tmp_path_factory):
    """One 3-epoch run straight through, and one resumed from the first run's epoch-0 checkpoint (a run
    killed after its first epoch), in fresh processes as on another machine.

    These two stay subprocesses of the console script on purpose: the resumed run must get everything it
    continues from out of the checkpoint and the cache, and a fresh interpreter is what proves that nothing
    else (a strategy or features memoised in module state, RNG or thread settings left by other tests) carried
    over; and both runs start from the same clean interpreter state, which the bit-for-bit comparison of their
    weights relies on."""
    straight, straight_proc = fit(tweets_cache_dir, tmp_path_factory.mktemp("straight"))
    resumed, resumed_proc = fit(tweets_cache_dir, tmp_path_factory.mktemp("resumed"),
                                "--ckpt_path", str(straight / "checkpoints" / "epoch=0.ckpt"))
    return straight, straight_proc, resumed, resumed_proc


def test_a_resumed_run_ends_exactly_where_the_uninterrupted_one_does(straight_and_resumed):
    straight, _, resumed, _ = straight_and_resumed
    a = torch.load(straight / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    b = torch.load(resumed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2 and a["global_step"] == b["global_step"]
    for name, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][name]), name
    first = torch.load(straight / "checkpoints" / "epoch=0.ckpt", map_location="cpu", weights_only=True)
    assert not torch.equal(first["state_dict"]["student.head.weight"], a["state_dict"]["student.head.weight"])
    summaries = [json.loads((run / "summary.json").read_text()) for run in (straight, resumed)]
    assert summaries[0]["student"] == summaries[1]["student"]
    val = [pd.read_csv(run / "metrics.csv").dropna(subset=["val/accuracy"]).set_index("epoch")
           for run in (straight, resumed)]
    for epoch in (1, 2):  # the epochs the resumed run trained itself
        for metric in ("val/accuracy", "val/macro_f1"):
            assert val[0].loc[epoch, metric] == val[1].loc[epoch, metric]


def test_a_resumed_run_restores_the_strategy_instead_of_refitting_it(straight_and_resumed):
    _, straight_proc, resumed, resumed_proc = straight_and_resumed
    fitted = re.search(r"fitted the LinearProjectionStrategy strategy on the 'final' representation of "
                       r"210 training rows \(fingerprint (\w+)\)",
                       straight_proc.stderr)
    restored = re.search(r"restored the LinearProjectionStrategy strategy from the checkpoint \(fingerprint (\w+)\); "
                         "it is not refitted", resumed_proc.stderr)
    assert fitted and restored and fitted.group(1) == restored.group(1)
    assert "fitted the" not in resumed_proc.stderr
    saved = torch.load(resumed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["DistillDataModule"]["teacher_cache"]  # the checkpoint names the teacher outputs it was fitted on


def test_a_checkpoint_with_another_number_of_subclasses_is_refused(straight_and_resumed, tmp_path, capsys):
    straight, _, _, _ = straight_and_resumed
    # no logger: the run's config.yaml goes to default_root_dir (the straight run's own, in its config: not there)
    code = main(["test", "--config", str(straight / "config.yaml"), "--data.strategy.num_subclasses", "3",
                 "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path),
                 "--ckpt_path", str(straight / "checkpoints" / "last.ckpt")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        "lelp: error: the checkpoint's student head has C·S = 2·2 = 4 outputs but this run needs C·S = 2·3 = 6; "
        "use the run's own config (--config <run>/config.yaml) or the checkpoint's num_subclasses.")


def test_resuming_with_another_teacher_is_refused(straight_and_resumed, tweets_cache_dir, tmp_path, capsys):
    """Another teacher head (one more epoch) writes its own cache entries; the checkpoint's strategy was fitted
    on the first teacher's embeddings, so training on from it would use silently wrong targets."""
    straight, _, _, _ = straight_and_resumed
    cache = tmp_path / "cache"
    shutil.copytree(tweets_cache_dir, cache)  # the encoder's features are reused; only the head retrains
    code = main(["fit", *tiny_run_args(cache, tmp_path, *RUN, "--data.teacher.head_epochs", "6",
                                       "--ckpt_path", str(straight / "checkpoints" / "epoch=0.ckpt"), wandb=False)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert re.fullmatch(r"lelp: error: the checkpoint's strategy was fitted on other teacher outputs \(teacher cache "
                        r"\w+\) than this run's .+ \(\w+\); resume with the same teacher and cache \(copy the cache "
                        r"folder along with the checkpoint\) or start a new fit\.", last), last
