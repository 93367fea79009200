"""``chain_method="sharded"`` and multi-process runs (:mod:`dgm.runtime.sharding`, :mod:`dgm.runtime.distributed`).

JAX reads its device count and distributed settings when it starts, so the runs happen in subprocesses
(``tests/sharding_worker.py``): 4 CPU host devices in one process, and two processes on 127.0.0.1 with gloo
collectives.

Exactness. Every chain gets the same keys on any layout, so the draws agree; they agree *bit for bit* when the
per-device programs round alike. On CPU XLA rounds a batch's SIMD loops and its scalar remainder differently, so a
device holding fewer chains than the SIMD width can differ from the one-device run in the last bits (about 1e-16
per transition, growing along a chain); the draws are compared to 1e-9 after 35 iterations (a wrong key layout —
each device splitting its own ``n_local`` keys — gives differences of order 1, checked by hand), and bitwise where
the per-device programs are the same (two processes x 1 device vs one process with a mesh of 2 devices).
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

WORKER = str(Path(__file__).with_name("sharding_worker.py"))
TOL = 1e-9


def _env(**extra):
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent)] + env.get("PYTHONPATH", "").split(os.pathsep))
    return env


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args, **env):
    return subprocess.Popen([sys.executable, WORKER, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_env(**env))


def test_sharded_layouts_and_two_processes(tmp_path):
    """One test (one pytest-xdist worker) for all subprocess runs, started together: the 4-device layouts and the two
    processes of the multi-host run."""
    port = _free_port()
    procs = [_start(["layouts", str(tmp_path / "layouts.npz")])]
    procs += [_start(["distributed", str(tmp_path / "run.npz")], DGM_COORDINATOR=f"127.0.0.1:{port}",
                     DGM_NUM_PROCESSES="2", DGM_PROCESS_ID=str(i)) for i in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
    layouts = dict(np.load(tmp_path / "layouts.npz"))

    # one process, meshes of 2 and 4 devices (4 and 2 chains per device) against the one-device vmap
    for n_devices in (2, 4):
        for what in ("inputs", "steps", "acceptance"):
            np.testing.assert_allclose(layouts[f"sharded{n_devices}_{what}"], layouts[f"vectorized_{what}"],
                                       rtol=0, atol=TOL)
    assert np.ptp(layouts["vectorized_inputs"][:, -1, 0]) > 0.1  # the chains do differ (per-chain keys)

    # warm-up with step-size adaptation does not depend on the layout (issue 21: 4 devices, 1 and 4 chains per
    # device): the same step sizes at every warm-up iteration and after it, bit for bit (dual averaging sees the
    # acceptance on a 2^-20 grid, dgm.runtime.engine), and the same draws to rounding. Without the grid the step
    # sizes differed by 2e-5 (4 chains) and 1e-2 (16 chains) after 50 iterations (checked by hand).
    for n_chains in (4, 16):
        vectorized, sharded = (f"adapted{n_chains}_{layout}" for layout in ("vectorized", "sharded"))
        np.testing.assert_array_equal(layouts[f"{sharded}_steps"], layouts[f"{vectorized}_steps"])
        np.testing.assert_array_equal(layouts[f"{sharded}_warmup_steps"], layouts[f"{vectorized}_warmup_steps"])
        np.testing.assert_allclose(layouts[f"{sharded}_inputs"], layouts[f"{vectorized}_inputs"], rtol=0, atol=TOL)
        assert np.ptp(layouts[f"{vectorized}_steps"]) > 0  # each chain adapts its own step size

    message = str(layouts["indivisible_error"])  # 6 chains over 4 devices
    assert "n_chains=6" in message and "4 devices" in message

    # sample_many: 3 observations over 2 devices (one padded copy, dropped), observations one after another on each
    # device (chain_method="sequential"): bit for bit the unsharded batch
    assert layouts["many_sharded"].shape == layouts["many_whole"].shape == (3, 4, 15, 3)
    np.testing.assert_array_equal(layouts["many_sharded"], layouts["many_whole"])

    # two processes x 1 device: every process returns all 8 chains, bit for bit those of one process with a mesh of
    # 2 devices (the same per-device program)
    for i in range(2):
        part = dict(np.load(tmp_path / f"run_{i}.npz"))
        assert part["devices"].tolist() == [2, 1, 2]  # 2 devices in all, 1 here, 2 processes
        for what in ("inputs", "steps", "acceptance"):
            np.testing.assert_array_equal(part[f"run_{what}"], layouts[f"sharded2_{what}"])
        assert "num_processes=3 but the running JAX cluster has 2 processes" in str(part["mismatch_error"])


def test_distributed_settings_are_checked(monkeypatch):
    from dgm.runtime.distributed import settings_from_environment

    for name in ("DGM_COORDINATOR", "DGM_NUM_PROCESSES", "DGM_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    assert settings_from_environment() == {}  # nothing given: JAX detects the cluster (Slurm ...)
    monkeypatch.setenv("DGM_COORDINATOR", "10.0.0.1:1234")
    monkeypatch.setenv("DGM_NUM_PROCESSES", "2")
    monkeypatch.setenv("DGM_PROCESS_ID", "1")
    assert settings_from_environment() == {"coordinator_address": "10.0.0.1:1234", "num_processes": 2,
                                           "process_id": 1}
    with pytest.raises(ValueError, match="process_id=2 is not in 0..1"):
        settings_from_environment(process_id=2)
    with pytest.raises(ValueError, match="host:port"):
        settings_from_environment(coordinator_address="10.0.0.1")
    with pytest.raises(ValueError, match="num_processes must be an integer"):
        settings_from_environment(num_processes="two")
    monkeypatch.delenv("DGM_PROCESS_ID")
    with pytest.raises(ValueError, match="incomplete: process_id"):
        settings_from_environment()


def test_sharded_options_are_checked():
    import jax
    import jax.numpy as jnp

    import dgm
    from dgm.runtime.sharding import chain_mesh, check_chain_layout

    model = dgm.GenerativeModel(lambda u: jnp.array([u[0] + u[1]]), 2, name="sum")
    with pytest.raises(ValueError, match="only used by chain_method='sharded'"):
        dgm.sample(model, [0.0], chain_method="vectorized", mesh=chain_mesh(), progress=False)
    grid = jax.sharding.Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1), ("a", "b"))
    with pytest.raises(ValueError, match="one axis"):
        check_chain_layout(4, grid)
    with pytest.raises(ValueError, match="chain_method must be"):
        dgm.sample(model, [0.0], chain_method="pmap", progress=False)
