"""dgm.threads writes only real XLA flags, and flags set before or after it survive (device count as the witness)."""

import os
import subprocess
import sys

import pytest

from dgm.threads import XLA_THREAD_FLAGS, configure_cpu_threads

_COUNT_DEVICES = "import jax; print(len(jax.devices('cpu')))"


def _devices(xla_flags: str, configure_first: bool) -> tuple[int, str]:
    """Start a fresh interpreter with ``XLA_FLAGS`` set, optionally run dgm's configuration, count CPU devices."""
    code = ("from dgm.threads import configure_cpu_threads; configure_cpu_threads(); " if configure_first else "")
    code += _COUNT_DEVICES
    env = dict(os.environ, XLA_FLAGS=xla_flags)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip().splitlines()[-1]), done.stderr


def test_every_thread_flag_is_an_xla_flag():
    assert all(flag.startswith("--xla_") and "=" in flag for flag in XLA_THREAD_FLAGS)


@pytest.mark.parametrize("position", ["before", "after"])
def test_device_count_flag_survives_dgm_configuration(position):
    """A user flag placed before dgm's, or appended after them (``XLA_FLAGS="$XLA_FLAGS --flag"``), is honoured."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    if position == "after":
        env["XLA_FLAGS"] = ""
    code = ("import os; from dgm.threads import configure_cpu_threads; configure_cpu_threads(); "
            + ("os.environ['XLA_FLAGS'] += ' --xla_force_host_platform_device_count=4'; " if position == "after" else "")
            + _COUNT_DEVICES)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.strip().splitlines()[-1]) == 4


def test_stray_token_is_removed_with_a_warning(monkeypatch):
    """The old advice ``intra_op_parallelism_threads=1`` would make XLA drop every later flag: it is removed."""
    monkeypatch.setenv("XLA_FLAGS", "intra_op_parallelism_threads=1 --xla_force_host_platform_device_count=4")
    with pytest.warns(RuntimeWarning, match="not an XLA flag"):
        values = configure_cpu_threads()
    assert values["XLA_FLAGS"].split() == ["--xla_force_host_platform_device_count=4", *XLA_THREAD_FLAGS]
    count, _ = _devices(values["XLA_FLAGS"], configure_first=False)
    assert count == 4


def test_user_setting_wins(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    values = configure_cpu_threads()
    assert values["XLA_FLAGS"] == "--xla_cpu_multi_thread_eigen=true" and values["OMP_NUM_THREADS"] == "2"
