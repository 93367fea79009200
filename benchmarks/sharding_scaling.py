"""Scaling of ``chain_method="sharded"`` with the number of (host) devices at a fixed number of chains per device.

For 1, 2 and 4 CPU host devices (``jax_num_cpu_devices``, each count in its own subprocess, JAX reading it at start)
it runs ``dgm.sample(model, x, chain_method="sharded", n_chains=chains_per_device * n_devices)`` on the Lotka-Volterra
model (paper preset, structured geometry), once to compile and once timed, and prints chain-iterations per second
(sampling time only, compilation excluded) and the speed-up over one device. A run of ``chain_method="vectorized"``
on one device with the largest chain count is the reference for "one device doing all the work".

Each CPU "device" is one XLA execution stream; with single-threaded XLA (``dgm.threads``, printed) the devices can
run in parallel on as many cores as the machine has, so the ideal speed-up is ``min(n_devices, cores)``; on the
2-core machine used for the README, 4 devices cannot beat 2. On a machine with GPUs, ``jax.devices()`` lists them and
the same script measures them (``--platform gpu``). Usage::

    python benchmarks/sharding_scaling.py [--chains-per-device 4] [--samples 100] [--devices 1 2 4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from dgm.threads import configure_cpu_threads  # noqa: E402  (before JAX starts)

THREADS = configure_cpu_threads()

CHILD = r"""
import json, sys, time
import jax
n_devices, per_device, n_samples, platform, method = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
                                                      sys.argv[4], sys.argv[5])
if platform == "cpu":
    jax.config.update("jax_num_cpu_devices", n_devices)
import dgm
from dgm.models.lotka_volterra import default_observations, lotka_volterra
from dgm.experiments.lotka_volterra.experiment import PAPER_PRESET
from dgm.runtime.sharding import chain_mesh

x = default_observations("semi-implicit")
model = lotka_volterra(x)
n_chains = per_device * n_devices
extra = dict(mesh=chain_mesh(jax.devices()[:n_devices])) if method == "sharded" else {}
kwargs = dict(n_chains=n_chains, n_warmup=0, n_samples=n_samples, progress=False, chain_method=method, **PAPER_PRESET,
              **extra)
with dgm.float64():
    first = dgm.sample(model, x, seed=0, **kwargs)
    best = min(dgm.sample(model, x, seed=s, **kwargs).wall_time for s in (1, 2))
print("ROW" + json.dumps(dict(devices=n_devices, method=method, chains=n_chains, compile=first.compile_time,
                              seconds=best, rate=n_chains * n_samples / best, residual=first.max_residual,
                              device=str(jax.devices()[0].platform))))
"""


def run(n_devices, per_device, n_samples, platform, method):
    done = subprocess.run([sys.executable, "-c", CHILD, str(n_devices), str(per_device), str(n_samples), platform,
                           method], capture_output=True, text=True, env=dict(os.environ))
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(next(line for line in done.stdout.splitlines() if line.startswith("ROW"))[3:])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chains-per-device", type=int, default=4, help="chains on each device (default 4)")
    parser.add_argument("--samples", type=int, default=100, help="iterations timed per chain (default 100)")
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4], help="device counts (default 1 2 4)")
    parser.add_argument("--platform", default="cpu", help="cpu (host devices, default) or gpu/tpu (real devices)")
    args = parser.parse_args(argv)
    print(f"threads: {THREADS}; cores available: {len(os.sched_getaffinity(0))}; load average {os.getloadavg()}")
    rows = [run(n, args.chains_per_device, args.samples, args.platform, "sharded") for n in args.devices]
    reference = run(1, args.chains_per_device * max(args.devices), args.samples, args.platform, "vectorized")
    print(f"Lotka-Volterra, paper preset, {args.chains_per_device} chains per device, {args.samples} iterations "
          f"(sampling time, best of 2, compilation excluded), platform {rows[0]['device']}")
    print(f"{'devices':>7} {'chains':>6} {'compile s':>9} {'sampling s':>10} {'chain-it/s':>10} {'speed-up':>8}")
    base = rows[0]["rate"]
    for row in rows:
        print(f"{row['devices']:>7} {row['chains']:>6} {row['compile']:>9.2f} {row['seconds']:>10.2f} "
              f"{row['rate']:>10.1f} {row['rate'] / base:>7.2f}x")
    print(f"reference: {reference['chains']} chains vectorized on 1 device: {reference['rate']:.1f} chain-it/s "
          f"({reference['rate'] / base:.2f}x the 1-device sharded rate)")


if __name__ == "__main__":
    main()
