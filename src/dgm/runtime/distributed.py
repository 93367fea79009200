"""Several processes (hosts) as one JAX program: :func:`initialize` wraps ``jax.distributed.initialize``.

After it, ``jax.devices()`` lists the devices of every process, so :func:`dgm.runtime.sharding.chain_mesh` (the
default mesh of ``dgm.sample(..., chain_method="sharded")`` and ``dgm.sample_many(..., sharded=True)``) spans all
hosts: each process runs the *same* script, holds the chains of its own devices, and the draws are gathered so that
every process returns the complete :class:`dgm.Result` (identical to the one-process run with the same seed).

Where the coordinator address, the number of processes and this process's id come from, first found wins:

1. the arguments of :func:`initialize`;
2. dgm's variables ``DGM_COORDINATOR`` (``host:port`` of process 0), ``DGM_NUM_PROCESSES``, ``DGM_PROCESS_ID``;
3. JAX's own cluster detection (``jax.distributed.initialize()`` with no arguments), which understands Slurm
   (``SLURM_*`` variables, ``srun``), Open MPI and the cloud TPU/GPU environments.

On CPU the cross-process collectives (the gather of the draws) need an implementation: gloo, which ships with jaxlib,
is selected (``jax_cpu_collectives_implementation``) unless the user chose one. Nothing here is dgm-specific
numerics; it only validates the settings and turns JAX's time-outs and mismatches into clear errors.
"""

from __future__ import annotations

import os
import sys

import jax

ENV_COORDINATOR = "DGM_COORDINATOR"
ENV_NUM_PROCESSES = "DGM_NUM_PROCESSES"
ENV_PROCESS_ID = "DGM_PROCESS_ID"


def _integer(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not (isinstance(value, int) or str(value).strip().lstrip("-").isdigit()):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def settings_from_environment(coordinator_address=None, num_processes=None, process_id=None) -> dict:
    """The arguments for ``jax.distributed.initialize``: those given, else ``DGM_*`` variables; ``{}`` when neither
    says anything (JAX then detects the cluster itself). Raises ``ValueError`` for an incomplete or inconsistent
    set (an id outside ``0 .. num_processes - 1``, a malformed address)."""
    coordinator_address = coordinator_address or os.environ.get(ENV_COORDINATOR) or None
    if num_processes is None and os.environ.get(ENV_NUM_PROCESSES):
        num_processes = os.environ[ENV_NUM_PROCESSES]
    if process_id is None and os.environ.get(ENV_PROCESS_ID):
        process_id = os.environ[ENV_PROCESS_ID]
    given = {"coordinator_address": coordinator_address, "num_processes": num_processes, "process_id": process_id}
    if all(v is None for v in given.values()):
        return {}
    missing = [k for k, v in given.items() if v is None]
    if missing:
        raise ValueError(
            f"distributed settings incomplete: {', '.join(missing)} not given (pass them to initialize() or set "
            f"{ENV_COORDINATOR}, {ENV_NUM_PROCESSES} and {ENV_PROCESS_ID}; or give none and let JAX detect a "
            "Slurm / MPI cluster)")
    num_processes = _integer(num_processes, "num_processes", 1)
    process_id = _integer(process_id, "process_id", 0)
    if process_id >= num_processes:
        raise ValueError(f"process_id={process_id} is not in 0..{num_processes - 1} (num_processes={num_processes})")
    host, _, port = str(coordinator_address).rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"coordinator address must be 'host:port', got {coordinator_address!r}")
    return {"coordinator_address": str(coordinator_address), "num_processes": num_processes,
            "process_id": process_id}


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, local_device_ids=None, timeout: int = 300) -> dict:
    """Join this process to a multi-process JAX run (call it first, before any JAX computation).

    Returns ``{"process_id", "num_processes", "local_devices", "global_devices"}``. Raises ``ValueError`` for
    malformed settings (see :func:`settings_from_environment`) and ``RuntimeError`` when JAX refuses them or when the
    running cluster's process count differs from ``num_processes``. When fewer processes than ``num_processes`` join
    within ``timeout`` seconds, JAX 0.12 *terminates* the waiting processes (a fatal ``DEADLINE_EXCEEDED`` from its
    coordination service, not a Python exception); the line printed to stderr before waiting names the settings.
    """
    settings = settings_from_environment(coordinator_address, num_processes, process_id)
    if jax.config.jax_platforms in (None, "", "cpu") and not jax.config.jax_cpu_collectives_implementation:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU all-gathers across processes
    if jax.distributed.is_initialized():  # a second call: accepted if its process count agrees (checked below)
        pass
    else:
        if settings:  # JAX aborts the process (not an exception) when the others do not join in time: say so first
            print(f"dgm: joining {settings['num_processes']} processes at {settings['coordinator_address']} as "
                  f"process {settings['process_id']} (waiting up to {timeout} s; if not all "
                  f"{settings['num_processes']} start, JAX ends this process with DEADLINE_EXCEEDED)",
                  file=sys.stderr, flush=True)
        try:
            jax.distributed.initialize(**settings, local_device_ids=local_device_ids, initialization_timeout=timeout)
        except Exception as error:  # noqa: BLE001 - JAX raises several types (RuntimeError, XlaRuntimeError ...)
            text = str(error)
            raise RuntimeError(
                f"jax.distributed.initialize({', '.join(f'{k}={v!r}' for k, v in settings.items()) or 'auto'}) "
                f"failed: {text.splitlines()[0] if text else type(error).__name__} Did all "
                f"{settings.get('num_processes', 'the')} processes start, with the same coordinator address and "
                "distinct process ids, within the time-out, before any JAX computation?") from error
    expected = settings.get("num_processes")
    if expected is not None and jax.process_count() != expected:
        raise RuntimeError(f"num_processes={expected} but the running JAX cluster has {jax.process_count()} "
                           "processes (was jax.distributed initialised earlier with other settings?)")
    return {"process_id": jax.process_index(), "num_processes": jax.process_count(),
            "local_devices": jax.local_device_count(), "global_devices": jax.device_count()}
