"""Checkpoint and resume of :func:`dgm.sample`: the complete state, written atomically every few chunks.

A run directory holds

* ``run.json`` — what the run is: format, the settings fingerprint (model, method, options, shapes, observation,
  chains, seed, ...), ``chunk_size`` and ``checkpoint_every``; written once, when the run starts;
* ``state-NNNNNN.ckpt`` — the state after a chunk: a magic line, the sha256 of the payload, the payload (NumPy
  ``.npz``): every leaf of the chains' states (positions and cached geometry: gradients, Jacobians, Gram factors),
  the dual-averaging state, the metric-adaptation (Welford) state, the step sizes, the phase's PRNG key, the failure
  counts of thinned-away transitions, the draws taken since the last write to the store (up to ``CARRY_BYTES``:
  a checkpoint is then one file write however many variables the store has), and JSON metadata (phase, next chunk, draws
  taken and draws in the store per group, max residual, wall time so far);
* ``draws.zarr`` — the draws so far (:mod:`dgm.runtime.draw_store`).

Each state file is written to a temporary file in the directory, ``fsync``-ed, renamed over its name
(``os.replace``, atomic on POSIX) and the directory ``fsync``-ed, by a writer thread while the next chunk runs (one
file at a time, in order); the newest two are kept. Reading checks the magic
line and the checksum and falls back, with a warning, to the previous state when the newest is truncated or corrupt.

Why a resumed run is bit-identical to an uninterrupted one: the driver's chunk ``k`` of a phase draws its randomness
from ``fold_in(phase_key, k)`` with the phase keys split from ``PRNGKey(seed)``, so it depends on (seed, phase, chunk
index) only, never on when the process started; the state is restored bit for bit into the same compiled program
(the fingerprint pins every setting it was compiled for); the draws the state carries go back into the buffer and
draws written to the store after the checkpoint are written again, identically, at the same offsets.
Hand-written: no library covers a JAX sampler's host loop (Orbax checkpoints pytrees, not a run's draws, settings
fingerprint and fallback).
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from dgm.errors import CheckpointError
from dgm.fileio import atomic_write, sha256_bytes
from dgm.integrator import FAILURE_NAMES
from dgm.result import Result, schema_stats
from dgm.runtime.draw_store import DrawStore, open_result
from dgm.runtime.fingerprint import differences, fingerprint

__all__ = ["CheckpointError", "Run", "open_run", "fingerprint", "FORMAT", "RUN_FILE", "STORE"]

FORMAT = "dgm.checkpoint/1"
RUN_FILE = "run.json"
STORE = "draws.zarr"
MAGIC = b"DGMCKPT1\n"
KEEP = 2  # state files kept: the newest and the previous good one
FLUSH_BYTES = 8 << 20
"""Draws are buffered in memory and written to the store once they reach this size (and when the run ends)."""
CARRY_BYTES = 1 << 20
"""A checkpoint carries up to this many bytes of buffered draws in its state file (one file write, however many
variables the store has) and writes more to the store first."""
PHASES = ("warmup", "sampling", "done")
DEFAULT_CHUNKS = 10
"""``checkpoint_every=None``: a checkpoint every ``DEFAULT_CHUNKS`` chunks (1000 iterations with ``chunk_size=100``)."""


# ---------------------------------------------------------------------------------------------------------------------
# state files (atomic writes and checksums: dgm.fileio)
# ---------------------------------------------------------------------------------------------------------------------
def _encode_state(arrays: dict, meta: dict) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    payload = buffer.getvalue()
    return MAGIC + sha256_bytes(payload).encode() + b"\n" + payload


def _decode_state(path: Path):
    """``(arrays, meta)`` of a state file; raises ``ValueError`` saying what is wrong with it."""
    data = path.read_bytes()
    header = len(MAGIC) + 65
    if not data.startswith(MAGIC):
        raise ValueError("not a dgm state file (bad magic line)")
    if len(data) < header:
        raise ValueError(f"truncated ({len(data)} bytes)")
    expected, payload = data[len(MAGIC):header - 1].decode("ascii", "replace"), data[header:]
    actual = sha256_bytes(payload)
    if actual != expected:
        raise ValueError(f"checksum mismatch (sha256 {actual[:12]}... of {len(payload)} bytes, recorded "
                         f"{expected[:12]}...): truncated or corrupt")
    with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(arrays.pop("__meta__").tobytes().decode())
    return arrays, meta


def _state_files(directory: Path) -> list[Path]:
    """State files, newest first."""
    return sorted(directory.glob("state-*.ckpt"), key=lambda p: p.name, reverse=True)


# ---------------------------------------------------------------------------------------------------------------------
# the run: what the driver's host loop calls
# ---------------------------------------------------------------------------------------------------------------------
def _check_every(checkpoint_every):
    if checkpoint_every is None:
        return None
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, (int, np.integer)) \
            or checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be an integer >= 1 (iterations between checkpoints), got "
                         f"{checkpoint_every!r}")
    return int(checkpoint_every)


def open_run(*, checkpoint, resume, checkpoint_every, chunk_size: int, fingerprint: dict, x_obs):
    """The :class:`Run` for ``dgm.sample(..., checkpoint=, resume=, checkpoint_every=)``, or ``None`` without them.

    ``checkpoint=DIR``: a new run written to ``DIR`` (which must not exist or be empty); ``resume=DIR``: continue the
    run in ``DIR`` (its settings must equal this call's); both naming the same ``DIR``: continue the run there if
    there is one, start it otherwise (one command line for a job that may be pre-empted and restarted)."""
    checkpoint_every = _check_every(checkpoint_every)
    if checkpoint is None and resume is None:
        if checkpoint_every is not None:
            raise ValueError("checkpoint_every needs checkpoint=DIR (or resume=DIR): there is nothing to write")
        return None
    if checkpoint is not None and resume is not None and Path(checkpoint).resolve() != Path(resume).resolve():
        raise ValueError(f"checkpoint={str(checkpoint)!r} and resume={str(resume)!r} name different directories: a "
                         "resumed run keeps writing to its own directory (pass one of them, or the same for both)")
    directory = Path(resume if resume is not None else checkpoint)
    has_run = (directory / RUN_FILE).exists()
    if resume is not None and checkpoint is None and not has_run:
        what = "does not exist" if not directory.exists() else "is not a dgm checkpoint directory (no run.json)"
        raise CheckpointError(f"resume={str(directory)!r} {what}; start a run with checkpoint=DIR")
    if resume is None and has_run:
        raise CheckpointError(f"checkpoint={str(directory)!r} already holds a run: pass resume={str(directory)!r} to "
                              "continue it (or load its result), or choose a new directory")
    if not has_run:
        if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
            raise CheckpointError(f"checkpoint={str(directory)!r} exists and is not an empty directory nor a dgm "
                                  "checkpoint; refusing to write into it")
        return Run.start(directory, fingerprint, chunk_size, checkpoint_every, x_obs)
    return Run.resume(directory, fingerprint, chunk_size, checkpoint_every, x_obs)


class Run:
    """A checkpointed run: restores the state, takes each chunk's draws from the host loop, writes checkpoints."""

    def __init__(self, directory: Path, record: dict, checkpoint_every: int, chunk_size: int, store: DrawStore,
                 state=None):
        self.directory = directory
        self.record = record
        self.chunk_size = chunk_size
        self.every_chunks = max(1, round(checkpoint_every / chunk_size))
        self.store = store
        arrays, meta = state if state is not None else ({}, {"phase": "warmup", "next_chunk": 0, "seq": 0,
                                                             "lengths": {}, "max_residual": -np.inf,
                                                             "wall_time": 0.0, "has_failure": False})
        self.leaves = [arrays[k] for k in sorted(arrays) if k.startswith("leaf_")]
        self.buffer: dict = {}  # draws not yet in the store, per group: a list of {name: (chain, draw, ...)}
        for key in sorted(k for k in arrays if k.startswith("pending:")):
            _, group, name = key.split(":", 2)
            self.buffer.setdefault(group, [{}])[0][name] = arrays[key]
        self.buffered_bytes = sum(a.nbytes for pieces in self.buffer.values() for a in pieces[0].values())
        self.skipped = arrays.get("skipped")
        self.meta = meta
        self.phase, self.next_chunk, self.seq = meta["phase"], int(meta["next_chunk"]), int(meta["seq"])
        self.lengths = {k: int(v) for k, v in meta["lengths"].items()}  # draws taken, per group
        self.flushed = {k: int(v) for k, v in meta.get("flushed", {}).items()}  # draws in the store, per group
        self.max_residual, self.prior_wall_time = float(meta["max_residual"]), float(meta["wall_time"])
        self.has_failure = bool(meta["has_failure"])
        self.chunks_since = 0
        self.t0 = time.perf_counter()
        self._writer = None  # a thread writing state files
        self._pending = None  # the state file being written

    # -- opening ----------------------------------------------------------------------------------------------------
    @classmethod
    def start(cls, directory: Path, fingerprint: dict, chunk_size: int, checkpoint_every, x_obs) -> "Run":
        directory.mkdir(parents=True, exist_ok=True)
        every = checkpoint_every or DEFAULT_CHUNKS * chunk_size
        record = {"format": FORMAT, "dgm_version": _version(), "fingerprint": fingerprint, "chunk_size": chunk_size,
                  "checkpoint_every": every}
        atomic_write(directory / RUN_FILE, json.dumps(record, indent=1).encode())
        store = DrawStore.create(directory / STORE, chunk_size, x_obs, _store_sizes(fingerprint))
        return cls(directory, record, every, chunk_size, store)

    @classmethod
    def resume(cls, directory: Path, fingerprint: dict, chunk_size: int, checkpoint_every, x_obs) -> "Run":
        try:
            record = json.loads((directory / RUN_FILE).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CheckpointError(f"{directory / RUN_FILE} is unreadable or corrupt ({error})") from None
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            raise CheckpointError(f"{directory / RUN_FILE} is not a {FORMAT} record")
        changed = differences(record["fingerprint"], fingerprint)
        if changed:
            raise CheckpointError(f"resume={str(directory)!r}: this call differs from the checkpointed run — "
                                  + "; ".join(changed) + ". Resume with the run's settings, or start a new run "
                                  "with checkpoint=<another directory>")
        every = checkpoint_every or int(record["checkpoint_every"])
        state = None
        files = _state_files(directory)
        for i, path in enumerate(files):
            try:
                state = _decode_state(path)
                break
            except (OSError, ValueError) as error:
                fallback = f"using the previous one, {files[i + 1].name}" if i + 1 < len(files) else "no other left"
                warnings.warn(f"checkpoint {path} is unusable ({error}); {fallback}", RuntimeWarning, stacklevel=4)
        if files and state is None:
            raise CheckpointError(f"resume={str(directory)!r}: no usable checkpoint (all of "
                                  f"{', '.join(p.name for p in files)} are truncated or corrupt)")
        if state is None:  # stopped before its first checkpoint: nothing to keep, start it again
            store = DrawStore.create(directory / STORE, chunk_size, x_obs, _store_sizes(fingerprint))
            return cls(directory, record, every, chunk_size, store)
        try:  # draws written after the checkpoint are written again, identically
            store = DrawStore(directory / STORE, chunk_size)
            if store.sizes != _store_sizes(fingerprint):
                raise ValueError(f"it holds {store.sizes} draws, the run needs {_store_sizes(fingerprint)}")
        except Exception as error:  # noqa: BLE001 - any reader failure: the draws are gone
            raise CheckpointError(f"resume={str(directory)!r}: the draw store {STORE} is missing or unreadable "
                                  f"({error})") from None
        return cls(directory, record, every, chunk_size, store, state)

    @property
    def resumed(self) -> bool:
        return bool(self.leaves)

    @property
    def finished(self) -> bool:
        return self.phase == "done"

    def result(self) -> Result:
        """The finished run's :class:`Result` (draws read lazily from the store)."""
        return open_result(self.directory / STORE)

    def restore(self, like):
        """The checkpointed ``(states, da_state, mm_state, step_sizes)``, shaped as ``like`` (abstract or concrete)."""
        leaves_like, treedef = jax.tree_util.tree_flatten(like)
        shapes = [(tuple(a.shape), np.dtype(a.dtype)) for a in self.leaves]
        expected = [(tuple(a.shape), np.dtype(a.dtype)) for a in leaves_like]
        if shapes != expected:
            raise CheckpointError(f"{self.directory}: the checkpointed state does not fit this run's state "
                                  f"({len(shapes)} arrays {shapes[:4]}..., expected {len(expected)} {expected[:4]}...)")
        return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(a) for a in self.leaves])

    # -- the host loop ----------------------------------------------------------------------------------------------
    def begin(self) -> None:
        self.t0 = time.perf_counter()

    def first_chunk(self, phase: str) -> int:
        """The first chunk of ``phase`` still to run (everything, for a phase the checkpoint is past)."""
        if PHASES.index(phase) < PHASES.index(self.phase):
            return 1 << 62
        return self.next_chunk if phase == self.phase else 0

    def after_chunk(self, phase: str, index: int, outputs: dict, carry, key) -> None:
        """Take chunk ``index`` of ``phase`` (outputs ``(draw, chain, ...)``, NumPy) and the state after it; write a
        checkpoint every ``every_chunks`` chunks."""
        def chains_first(a):
            return np.swapaxes(np.asarray(a), 0, 1)

        if phase == "warmup":
            self._buffer("warmup_sample_stats", schema_stats({k: chains_first(v) for k, v in outputs["stats"].items()}))
        else:
            stats = dict(outputs["stats"], constraint_residual=outputs["residual"])
            self.has_failure = "failure" in stats
            self._buffer("posterior", {"z": chains_first(outputs["latents"]), "u": chains_first(outputs["inputs"])})
            self._buffer("sample_stats", schema_stats({k: chains_first(v) for k, v in stats.items()}))
            skipped = np.asarray(outputs["skipped_failures"]).sum(axis=0)
            self.skipped = skipped if self.skipped is None else self.skipped + skipped
            self.max_residual = max(self.max_residual, float(np.max(outputs["residual"])))
        self.phase, self.next_chunk = phase, index + 1
        self.chunks_since += 1
        if self.chunks_since >= self.every_chunks:
            self.write(carry, key)
        elif self.buffered_bytes >= FLUSH_BYTES:
            self.flush()

    def _buffer(self, group: str, arrays: dict) -> None:
        pieces = self.buffer.setdefault(group, [])
        pieces.append(arrays)
        self.buffered_bytes += sum(a.nbytes for a in arrays.values())
        self.lengths[group] = self.lengths.get(group, 0) + next(iter(arrays.values())).shape[1]

    def flush(self) -> None:
        """Append the buffered draws to the store."""
        for group, pieces in self.buffer.items():
            arrays = {k: np.concatenate([p[k] for p in pieces], axis=1) if len(pieces) > 1 else pieces[0][k]
                      for k in pieces[0]}
            self.store.write(group, self.flushed.get(group, 0), arrays)
        self.flushed = dict(self.lengths)
        self.buffer, self.buffered_bytes = {}, 0

    def write(self, carry, key, phase=None) -> None:
        """Write the complete state atomically, with the draws not yet in the store (a state accounts for every draw
        taken: those in the store and those it carries), and drop state files older than the previous one."""
        if self.buffered_bytes > CARRY_BYTES:
            self.flush()
        self.seq += 1
        leaves = [np.asarray(a) for a in jax.tree_util.tree_leaves(carry)]
        arrays = {f"leaf_{i:04d}": a for i, a in enumerate(leaves)}
        for group, pieces in self.buffer.items():
            for name in pieces[0]:
                arrays[f"pending:{group}:{name}"] = np.concatenate([p[name] for p in pieces], axis=1)
        arrays["phase_key"] = np.asarray(key)
        if self.skipped is not None:
            arrays["skipped"] = self.skipped
        meta = {"phase": phase or self.phase, "next_chunk": self.next_chunk, "seq": self.seq,
                "lengths": dict(self.lengths), "flushed": dict(self.flushed), "max_residual": self.max_residual,
                "has_failure": self.has_failure, "wall_time": self.prior_wall_time + time.perf_counter() - self.t0,
                "treedef": str(jax.tree_util.tree_structure(carry))}
        path = self.directory / f"state-{self.seq:06d}.ckpt"

        def write_state():  # in the writer thread: encoding and fsync overlap the next chunk
            atomic_write(path, _encode_state(arrays, meta))
            for old in _state_files(self.directory)[KEEP:]:
                old.unlink(missing_ok=True)

        self.wait()  # one state file at a time, in order; a failed write raises here
        if self._writer is None:
            self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="dgm-checkpoint")
        self._pending = self._writer.submit(write_state)
        self.chunks_since = 0

    def wait(self) -> None:
        """Wait for the state file being written (raising its error, if any)."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def close(self) -> None:
        """Let the state file being written finish (the host loop's ``finally``: also after an error)."""
        if self._pending is not None:
            concurrent.futures.wait([self._pending])
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None

    def finish(self, meta: dict, carry, key) -> Result:
        """Write the run's metadata to the store and the final ("done") state; the :class:`Result`, read lazily."""
        self.flush()
        meta = dict(meta, wall_time=self.prior_wall_time + meta["wall_time"], max_residual=self.max_residual)
        skipped = self.skipped if self.skipped is not None else np.zeros((1, len(FAILURE_NAMES)), int)
        meta["unrecorded_failures"] = {name: int(skipped.sum(axis=0)[i]) for i, name in enumerate(
            FAILURE_NAMES[c] for c in sorted(FAILURE_NAMES))} if self.has_failure else {}
        self.store.set_attrs(Result(latents=None, inputs=None, stats={}, **meta).attributes())
        self.prior_wall_time, self.t0 = meta["wall_time"], time.perf_counter()
        self.phase = "done"
        self.write(carry, key, phase="done")
        self.wait()
        self.close()
        if all(group in self.store.open_groups for group, n in self.store.sizes.items() if n):
            return open_result(self.directory / STORE, self.store)
        return self.result()


def _store_sizes(fingerprint: dict) -> dict:
    return {"warmup_sample_stats": int(fingerprint["n_warmup"]), "posterior": int(fingerprint["n_samples"]),
            "sample_stats": int(fingerprint["n_samples"])}


def _version() -> str:
    try:
        import dgm

        return dgm.__version__
    except Exception:  # pragma: no cover
        return "unknown"
