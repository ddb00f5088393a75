"""The table of `lelp` subcommands: one overview, each command's own help, options read into dataclasses, and
one error path (one sentence, exit 2; Ctrl-C on a resumable command: 130)."""

import dataclasses
import importlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import CONFIGS, LELP

from lelp_lightning.cli import main
from lelp_lightning.commands import COMMANDS, ExportOptions, ServeOptions, parse_options
from lelp_lightning.errors import LelpError

HEAVY = ("torch", "lightning", "optuna", "transformers")
EVERY_COMMAND = ("fit", "validate", "test", "predict", "cache", "tune", "search", "active", "export", "serve",
                 "strategies", "objectives", "students", "teachers", "selectors")


def imported_heavy(*args: str) -> tuple[int, str, list[str]]:
    """``main(args)`` in a fresh interpreter: its status, its output and which heavy modules it imported."""
    script = ("import json, sys\nfrom lelp_lightning.cli import main\ncode = main(sys.argv[1:])\n"
              f"print('HEAVY', json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\nsys.exit(code)\n")
    proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120)
    out, _, heavy = proc.stdout.rpartition("HEAVY ")
    return proc.returncode, out + proc.stderr, json.loads(heavy)


@pytest.mark.parametrize("args", [["--help"], ["-h"], []])
def test_the_overview_lists_every_command_with_one_line(args, capsys):
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: lelp <command>")
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert tuple(rows) == EVERY_COMMAND == tuple(COMMANDS)
    assert all(len(line.split()) > 2 for line in rows.values())  # a description on the same line


def test_the_overview_is_fast_and_imports_no_torch():
    """The console script itself, a fresh process: the overview is the standard library and this package only."""
    status, out, heavy = imported_heavy("--help")
    assert status == 0 and "serve" in out and heavy == []
    start = time.perf_counter()
    proc = subprocess.run([LELP, "--help"], capture_output=True, text=True, timeout=60)
    took = time.perf_counter() - start
    assert proc.returncode == 0 and "selectors" in proc.stdout
    assert took < 5, f"lelp --help took {took:.2f} s"  # ≈0.1 s; generous for a loaded machine


def test_serve_imports_neither_torch_nor_lightning():
    """LitServe's workers import the console script again: `lelp serve` must stay torch-free, failing or not."""
    status, out, heavy = imported_heavy("serve", "/nonexistent/export")
    assert status == 2 and "is not a complete export folder" in out and heavy == []
    status, out, heavy = imported_heavy("serve", "--help")
    assert status == 0 and "--max_texts" in out and heavy == []


@pytest.mark.parametrize(("command", "group"), [("tune", "TuneOptions"), ("search", "SearchOptions"),
                                           ("active", "ActiveOptions")])
def test_a_group_command_help_lists_its_own_options_then_points_to_the_run_options(command, group, capsys):
    cls = getattr(importlib.import_module(COMMANDS[command].module), group)
    assert main([command, "--help"]) == 0  # `lelp search --help` too, without the --search.space a run needs
    out = capsys.readouterr().out
    assert out.startswith(f"usage: lelp {command} ")
    for f in dataclasses.fields(cls):
        if f.init:  # a field set in __post_init__ (search's space_source) is no option
            assert f"  --{command}.{f.name}  " in out and f.metadata["help"] in out
        else:
            assert f"--{command}.{f.name}" not in out
    assert out.rstrip().endswith("`lelp fit --help` lists them.")


@pytest.mark.parametrize(("command", "options"), [("export", ExportOptions), ("serve", ServeOptions)])
def test_export_and_serve_help_come_from_their_dataclass(command, options, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: lelp {command} ")
    for f in dataclasses.fields(options):
        flag = f"<{f.name}>" if f.metadata.get("positional") else f"--{f.name}"
        assert f"  {flag}  " in out and f.metadata["help"] in out


def test_fit_keeps_lightning_clis_own_help(capsys):
    with pytest.raises(SystemExit) as done:
        main(["fit", "--help"])
    assert done.value.code == 0
    assert "--trainer.max_epochs" in capsys.readouterr().out


def test_an_unknown_command_is_one_sentence(capsys):
    assert main(["fitt", "--config", "x.yaml"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lelp: error: 'fitt' is not a lelp command; expected one of fit, validate,")
    assert len(err.splitlines()) == 1 and err.endswith("(`lelp --help` describes them).")


def test_options_are_read_into_their_dataclass():
    options = parse_options("serve", ServeOptions, ["student", "--port", "9000", "--batch_timeout=0.01"])
    assert options == ServeOptions(Path("student"), port=9000, batch_timeout=0.01)
    options = parse_options("export", ExportOptions, ["--config", "c.yaml", "--ckpt_path", "l.ckpt", "--output", "o",
                                                      "--quantize", "int8"])
    assert (options.config, options.opset, options.quantize, options.bench_seconds) == (Path("c.yaml"), None,
                                                                                         "int8", 2.0)


@pytest.mark.parametrize(("command", "args", "message"), [
    ("serve", [], "lelp serve: the following arguments are required: folder; usage: lelp serve <folder> [--host"),
    ("serve", ["s", "--port", "eighty"], "lelp serve: argument --port: invalid int value: 'eighty'; usage:"),
    ("serve", ["s", "--prot", "80"], "lelp serve: unrecognized arguments: --prot 80; usage:"),
    ("serve", ["s", "--port", "70000"], "lelp serve --port must be in 0-65535, got 70000."),
    ("serve", ["s", "--max_texts", "0"], "lelp serve --max_texts must be an integer >= 1, got 0."),
    ("export", ["--config", "c"], "lelp export: the following arguments are required: --ckpt_path, --output; usage:"),
    ("export", ["--config", "c", "--ckpt_path", "k", "--output", "o", "--quantize", "int4"],
     "--quantize: invalid choice: 'int4'; expected one of none, int8."),
    ("export", ["--config", "c", "--ckpt_path", "k", "--output", "o", "--bench_seconds", "-1"],
     "lelp export --bench_seconds must be >= 0, got -1.0."),
])
def test_bad_options_are_one_sentence_through_main(command, args, message, capsys):
    assert main([command, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"lelp: error: {message}") and err.endswith(".")


def test_a_dataclass_built_in_python_is_checked_the_same_way():
    with pytest.raises(LelpError, match=r"^--quantize: invalid choice: 'fp8'; expected one of none, int8\.$"):
        ExportOptions(Path("c"), Path("k"), Path("o"), quantize="fp8")


@pytest.mark.parametrize(("command", "module", "runner"), [("tune", "lelp_lightning.tune.study", "run_study"),
                                                   ("active", "lelp_lightning.active.loop", "run_active")])
def test_ctrl_c_on_a_resumable_command_is_status_130(command, module, runner, monkeypatch, capsys):
    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib.import_module(module), runner, interrupted)
    assert main([command, "--config", str(CONFIGS / "quickstart.yaml")]) == 130
    assert capsys.readouterr().err.strip().endswith(f"lelp: {command} interrupted; the same command resumes it.")


def test_ctrl_c_elsewhere_is_not_swallowed(monkeypatch):
    from lelp_lightning.commands import Registered

    monkeypatch.setattr(Registered, "run", lambda self, name, args: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        main(["strategies"])
