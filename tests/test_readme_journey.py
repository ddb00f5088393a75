"""The README's "Your own data" journey, run as written: its bash block, parsed out of README.md, each ``lelp``
command through ``main`` in a temporary working folder that holds ``my_data.csv`` (300 tweets with the README's
``review`` / ``stars`` columns) and a link to the repository's ``configs/``.

The commands run verbatim but for one addition: the command that writes ``my_run.yaml`` gets the tiny-size
options (:data:`TINY`: a 64-token, 32-unit teacher head, a 4,096-bucket bag, 2 epochs) before its
``--print_config``, so that the file, and every later command that reads it unchanged, runs in seconds.
W&B is disabled (``WANDB_MODE=disabled``): the quickstart's W&B logger then logs nothing."""

import contextlib
import io
import re
import shlex

import pandas as pd
import pytest
from helpers import CONFIGS, REPO, run_main, tiny_tweets

TINY = ["--data.teacher.max_length", "64", "--data.teacher.head_hidden", "32", "--data.teacher.head_epochs", "5",
        "--data.featurizer.num_buckets", "4096", "--data.batch_size", "32", "--trainer.max_epochs", "2",
        "--data.progress", "false", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false"]


def journey() -> list[list[str]]:
    """The commands of the bash block(s) of the README's "Your own data" paragraph (up to the next bold
    paragraph), one word list each: line continuations joined, comments dropped."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("**Your own data:**", 1)[1]
    section = re.split(r"\n\*\*", section, maxsplit=1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)
    assert blocks, "the README's 'Your own data' paragraph has no bash block"
    text = "\n".join(blocks).replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in text.splitlines() if shlex.split(line, comments=True)]


def run(words: list[str]):
    """One command of the journey: ``lelp <args> [> file]`` in this process."""
    assert words[0] == "lelp", words
    args, target = words[1:], None
    if ">" in args:
        args, target = args[:args.index(">")], args[args.index(">") + 1]
    if target is None:
        ran = run_main(*args)
        assert ran.returncode == 0, (words, ran.stderr[-3000:])
        return ran.stdout
    from lelp_lightning.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:  # --print_config exits
        main(args)
    assert done.value.code in (0, None), words
    with open(target, "w") as file:
        file.write(out.getvalue())
    return ""


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A user's folder: ``my_data.csv`` (text column ``review``, labels ``stars``) and the shipped configs."""
    rows = []
    for split in ("train", "val", "test"):
        data = tiny_tweets().split(split)
        rows += [{"review": text, "stars": f"{int(label) + 1} stars"} for text, label in
                 zip(data.texts, data.labels, strict=True)]
    pd.DataFrame(rows).to_csv(tmp_path / "my_data.csv", index=False)
    (tmp_path / "configs").symlink_to(CONFIGS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    return tmp_path


def test_the_readme_journey_on_your_own_data_runs_as_written(workdir):
    commands = journey()
    assert [c[:2] for c in commands] == [["lelp", "fit"], ["lelp", "cache"], ["lelp", "fit"]]
    writes = next(c for c in commands if ">" in c)
    printing = writes.index("--print_config")
    writes[printing:printing] = TINY
    outputs = [run(words) for words in commands]
    assert "train: " in outputs[1]  # lelp cache lists the cached splits
    assert "student" in outputs[2] and "summary written to runs/my_data/version_0/summary.json" in outputs[2]
    assert (workdir / "runs" / "my_data" / "version_0" / "checkpoints" / "last.ckpt").exists()
    assert not (workdir / "config.yaml").exists()  # lelp cache writes no config.yaml here (issue 32, item 8)
