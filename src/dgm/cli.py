"""The ``dgm`` command line: one sub-command per paper experiment (:mod:`dgm.experiments`), wired the same way.

This module owns what every sub-command shares: the options ``--out``, ``--seed``, ``--quick``, ``--paper`` (where
the experiment has a paper preset) and ``--no-progress``; the size presets (an experiment's ``PRESETS["default"]``
are its options' defaults, and ``--quick`` / ``--paper`` replace the values of the options the user did not set);
the command line as typed, handed to the experiment for its report (``args.command_line``); and the exit status:
``0`` on success, ``2`` with one line on stderr for every user mistake (a bad option or value, a missing or unusable
file, a data set that is not installed: argparse's errors and :data:`dgm.errors.USER_ERRORS` /
:class:`dgm.errors.DgmError`), and a traceback only for a bug.  ``dgm lotka-volterra --help`` explains every option.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from dgm.threads import configure_cpu_threads

__all__ = ["main", "build_parser", "UserMistake"]

SIZES = ("quick", "default", "paper")
"""The size presets an experiment may define: ``--quick``, no flag, ``--paper``."""


class UserMistake(SystemExit):
    """Exit status 2 after a user mistake.  The one-line message has gone to stderr already; ``str()`` of the
    exception is that message too, so a caller of :func:`main` (a script, a test) can read it."""

    def __init__(self, message: str):
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _fail(prog: str, message: str) -> UserMistake:
    line = f"{prog}: error: {_one_line(message)}"
    print(line, file=sys.stderr)
    return UserMistake(line)


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage block) and exit status 2 for every mistake on the command line."""

    def error(self, message):
        raise _fail(self.prog, f"{message} (see {self.prog} --help)")


class _HelpFormatter(argparse.HelpFormatter):
    """Shows each option's default where it has one (not for on/off flags or options that are off by default)."""

    def _get_help_string(self, action):  # the hook argparse's own ArgumentDefaultsHelpFormatter overrides
        text = action.help or ""
        off = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if off or "%(default)" in text or not action.option_strings:
            return text
        return text + " (default: %(default)s)"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dgm")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown (not installed)"


def _add_shared_options(parser: argparse.ArgumentParser, experiment) -> None:
    group = parser.add_argument_group("shared options")
    group.add_argument("--out", type=Path, default=Path("results") / experiment.NAME, metavar="DIR",
                       help="output folder (created if missing)")
    group.add_argument("--seed", type=int, default=0, metavar="N", help="random seed (same seed, same results)")
    sizes = group.add_mutually_exclusive_group()
    sizes.add_argument("--quick", action="store_true",
                       help="about a minute, for a first look (and the tests): " + _describe(experiment, "quick"))
    if "paper" in experiment.PRESETS:
        sizes.add_argument("--paper", action="store_true",
                           help="the paper's size (long): " + _describe(experiment, "paper"))
    group.add_argument("--no-progress", action="store_true", help="no progress bars")


def _describe(experiment, size: str) -> str:
    values = experiment.PRESETS[size]
    return ", ".join(f"--{k.replace('_', '-')} {_format_value(v)}" for k, v in values.items()) or "the defaults"


def _format_value(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def _check_presets(experiment, parser: argparse.ArgumentParser) -> None:
    """A preset naming an option the experiment does not have is a bug in the experiment, found at start-up."""
    dests = {action.dest for action in parser._actions}  # argparse offers no public list of a parser's options
    for size, values in experiment.PRESETS.items():
        if size not in SIZES:
            raise RuntimeError(f"dgm.experiments {experiment.NAME}: unknown preset {size!r} (known: {SIZES})")
        unknown = sorted(set(values) - dests)
        if unknown:
            raise RuntimeError(f"dgm.experiments {experiment.NAME}: preset {size!r} sets unknown options {unknown}")


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    """The ``dgm`` parser and ``{sub-command: (experiment module, its parser)}``."""
    from dgm.experiments import load_all

    parser = _Parser(prog="dgm", description="Asymptotically exact inference in differentiable generative models: "
                                            "the paper's experiments, one sub-command each.")
    parser.add_argument("--version", action="version", version=f"dgm {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    commands = {}
    for experiment in load_all():
        p = sub.add_parser(experiment.NAME, help=experiment.HELP, description=experiment.DESCRIPTION,
                           formatter_class=_HelpFormatter)
        experiment.add_arguments(p)
        _add_shared_options(p, experiment)
        p.set_defaults(**experiment.PRESETS.get("default", {}))
        _check_presets(experiment, p)
        commands[experiment.NAME] = (experiment, p)
    return parser, commands


_UNSET = object()


def _options_given(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The destinations of the options present on the command line ``argv`` (of one sub-command): ``argv`` parsed
    again with every default replaced by a marker, so what is not the marker was typed by the user."""
    saved = {action: action.default for action in parser._actions}
    try:
        for action in saved:
            action.default = _UNSET
        given = parser.parse_args(argv)
    finally:
        for action, default in saved.items():
            action.default = default
    return {dest for dest, value in vars(given).items() if value is not _UNSET}


def _apply_size(args: argparse.Namespace, experiment, parser: argparse.ArgumentParser, argv: list[str]) -> None:
    args.size = "quick" if args.quick else "paper" if getattr(args, "paper", False) else "default"
    if args.size == "default":
        return
    given = _options_given(parser, argv)
    for dest, value in experiment.PRESETS[args.size].items():
        if dest not in given:
            setattr(args, dest, value)


def main(argv=None) -> int:
    """Run the command line (``argv``: the arguments after ``dgm``; default ``sys.argv[1:]``) and return the exit
    status; a user mistake prints one line on stderr and raises :class:`UserMistake` (exit status 2)."""
    from dgm.errors import USER_ERRORS, DgmError

    configure_cpu_threads()  # before JAX starts; the user's own settings win
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, commands = build_parser()
    args = parser.parse_args(argv)
    experiment, sub_parser = commands[args.command]
    _apply_size(args, experiment, sub_parser, argv[argv.index(args.command) + 1:])
    args.command_line = "dgm " + shlex.join(argv)
    try:
        return experiment.run(args)
    except (*USER_ERRORS, DgmError) as error:
        # A user mistake: the experiments check their input and raise ValueError (or another of USER_ERRORS, or
        # one of dgm.errors) naming the option. Any other exception is a bug and keeps its traceback.
        raise _fail(f"dgm {args.command}", str(error)) from None


if __name__ == "__main__":
    sys.exit(main())
