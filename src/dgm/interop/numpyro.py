"""NumPyro models as differentiable generative models: :func:`from_numpyro`.

A NumPyro program is a generator in the paper's sense (section 1: "we can track all of the calls to a random number
generator in a program, and given the values sampled ... all of the operations then performed by the program are
deterministic"). :func:`from_numpyro` makes that explicit: every ``numpyro.sample`` site draws its value as a
differentiable function of standard-normal noise, and the noise of all sites is the input vector ``u ~ N(0, I)`` of a
:class:`dgm.GenerativeModel`; the sites named in ``observed`` are its output ``x = g_x(u)`` and the other sites its
latents ``z = g_z(u)``. Conditioning on ``x = x_obs`` is then constrained HMC on ``{u : g_x(u) = x_obs}`` (eq. 16),
which conditions a NumPyro simulator exactly on *deterministic* outputs (``numpyro.deterministic`` sites: an ODE
solution, a noiseless trajectory) where NumPyro itself needs a likelihood.

**Site values from noise** (one rule per family; the noise of a site has the shape of the value NumPyro would
sample, except that a ``TransformedDistribution`` takes the shape of its base):

* ``Normal``: ``loc + scale * n`` (the location-scale reparameterisation NumPyro's ``rsample`` uses);
* ``MultivariateNormal``, ``LowRankMultivariateNormal``: ``loc + scale_tril @ n``;
* ``GaussianRandomWalk``: ``cumsum(scale * n)`` along the steps (as NumPyro's sampler);
* ``TransformedDistribution`` (``LogNormal``, ``InverseGamma``, ``LogUniform``, ``Pareto``, affine/exp/sigmoid
  chains ...): the base distribution's value from ``n`` by these rules, pushed through the distribution's own
  ``transforms``;
* ``Independent``, ``ExpandedDistribution``, ``MaskedDistribution``: their base distribution's rule (parameters
  broadcast against the noise);
* any other continuous distribution with a scalar event whose NumPyro class implements ``icdf`` (``Gamma``, ``Beta``,
  ``StudentT``, ``Exponential``, ``HalfNormal``, ``HalfCauchy``, ``Cauchy``, ``Laplace``, ``Uniform``, ``Gumbel``,
  ``Weibull``, truncated distributions ...): ``icdf(Phi(n))``, ``Phi`` the standard-normal CDF. NumPyro's ``Gamma``,
  ``Beta`` and ``StudentT`` inverse CDFs come from TensorFlow Probability's JAX substrate (a dependency of dgm),
  differentiable in ``n`` and in the parameters. In float64, ``Phi(n)`` rounds to 1 for ``n > 8.3``, where such
  right tails give ``inf`` (a rejected trajectory, counted; the prior mass there is below ``1e-16``).

A model rewritten with NumPyro's own ``reparam`` handler (``numpyro.handlers.reparam(model, config={...})`` with
``LocScaleReparam``, ``TransformReparam`` ...) is taken as it is: its new base sites get the noise by the rules above
and the reparameterised sites become deterministic latents.

Discrete sites, continuous sites with neither rule (``Dirichlet``, ``LKJ``, ``Wishart`` ...), subsampled plates,
``numpyro.factor`` and ``numpyro.param`` sites, ``control_flow.cond`` and models whose sites change with the random
values are rejected with a ``ValueError`` naming the site and why. The last is checked by tracing the model twice
with different seeds (abstractly, ``jax.eval_shape``: a Python branch on a sampled value fails there, and the two runs
must show the same sites with the same shapes).

**Inputs, in order.** ``u = (u1, v, w)``: ``u1`` the noise of the latent sites outside ``scan`` (program order,
each flattened); ``v`` the noise of each ``numpyro.contrib.control_flow.scan``, step by step (``v_1 .. v_T``, each
the body's sample sites in program order, latent or observed); ``w`` the noise of observed sample sites outside
``scan`` (program order). ``parameter_inputs`` is the length of ``u1`` (the ABC baselines redraw the rest).

**Structure** (``structure="auto"``): when the observations are the carried state of a ``scan`` Markov chain
(``x_t = carry_t``, as many noise entries per step as state entries), the model gets a
:func:`dgm.structure.markov_structure` declaration; when the only observed site is a ``Normal`` (or
``MultivariateNormal``) sample site in a ``numpyro.plate`` of independent observations, an
:func:`dgm.structure.independent_structure` one. Either is checked numerically against the generator before it is
attached (:meth:`dgm.structure.MarkovStructure.check_generator`), so :func:`dgm.sample` uses the linear-time
geometry (paper, Appendix D); otherwise the model is dense. ``structure="markov"`` / ``"independent"`` insist (a
``ValueError`` says why it does not apply), ``"dense"`` declines.

**What is NumPyro's and what is written here.** Tracing, substitution and blocking of sites are NumPyro's handlers
(``seed``, ``trace``, ``substitute``, ``block``) and its ``Messenger`` effect system; distributions, transforms and
inverse CDFs are NumPyro's. Written here, because NumPyro has no such function: the map from standard-normal noise
to a site value (NumPyro's samplers take a PRNG key, not noise, and its ``reparam`` handlers change the model's
sites instead of exposing noise), and the two small messengers that record ``scan`` calls and stop a model at a
given site (to build the per-step functions of the structure declarations).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax.scipy.special import ndtr
from numpyro import handlers
from numpyro.primitives import Messenger

from dgm.model import GenerativeModel
from dgm.precision import float64
from dgm.structure import MarkovStructure, independent_structure, markov_structure

__all__ = ["from_numpyro"]

STRUCTURES = ("auto", "dense", "markov", "independent")

_WRAPPERS = (dist.Independent, dist.MaskedDistribution, dist.ExpandedDistribution)
_GAUSSIAN_VECTORS = (dist.MultivariateNormal, dist.LowRankMultivariateNormal)


# -- noise -> site value ---------------------------------------------------------------------------------------------
def _leaf(fn):
    """The distribution a site's value is drawn from once wrappers and transforms are peeled off."""
    while isinstance(fn, _WRAPPERS + (dist.TransformedDistribution,)):
        fn = fn.base_dist
    return fn


def _has_icdf(fn) -> bool:
    return type(fn).icdf is not dist.Distribution.icdf


def _check_reparameterisable(name: str, fn) -> None:
    """``ValueError`` naming the site unless its value is a differentiable function of standard-normal noise."""
    if isinstance(fn, dist.Unit):
        raise ValueError(f"site {name!r} is a numpyro.factor term: dgm conditions a generator on its outputs and has "
                         "no place for extra log-density terms (write the term as an observed site instead)")
    leaf = _leaf(fn)
    kind = type(leaf).__name__
    try:
        discrete = bool(leaf.is_discrete)
    except (AssertionError, NotImplementedError, AttributeError):
        discrete = False
    if discrete:
        raise ValueError(f"site {name!r} is discrete ({kind}): dgm needs every random choice to be a differentiable "
                         "function of continuous noise (marginalise it out or use a continuous relaxation)")
    if isinstance(leaf, (dist.Normal, dist.GaussianRandomWalk) + _GAUSSIAN_VECTORS):
        return
    if leaf.event_shape != () or not _has_icdf(leaf):
        raise ValueError(f"site {name!r} ({kind}) has no standard-normal reparameterisation and no inverse CDF in "
                         "NumPyro, so its value is not a differentiable function of noise; build it from Normal, "
                         "Gamma, Beta ... sites (e.g. a Dirichlet as normalised Gamma draws)")
    try:
        jax.eval_shape(lambda q: leaf.icdf(q), jax.ShapeDtypeStruct(leaf.batch_shape, jnp.result_type(float)))
    except (NotImplementedError, ImportError) as error:
        raise ValueError(f"site {name!r} ({kind}): NumPyro's inverse CDF is not available ({error})") from error


def noise_shape(fn, sample_shape=()) -> tuple:
    """Shape of the standard-normal noise that determines one draw of ``fn`` with ``sample_shape`` (module doc)."""
    sample_shape = tuple(sample_shape)
    if isinstance(fn, dist.ExpandedDistribution):
        base = fn.base_dist
        return sample_shape + tuple(fn.batch_shape) + noise_shape(base)[len(base.batch_shape):]
    if isinstance(fn, (dist.Independent, dist.MaskedDistribution, dist.TransformedDistribution)):
        return noise_shape(fn.base_dist, sample_shape)
    return sample_shape + tuple(fn.batch_shape) + tuple(fn.event_shape)


def value_from_noise(fn, noise):
    """The value of a draw of ``fn`` from standard-normal ``noise`` of shape :func:`noise_shape` (module doc)."""
    if isinstance(fn, _WRAPPERS):
        return value_from_noise(fn.base_dist, noise)
    if isinstance(fn, dist.TransformedDistribution):
        value = value_from_noise(fn.base_dist, noise)
        for transform in fn.transforms:
            value = transform(value)
        return value
    if isinstance(fn, dist.Normal):
        return fn.loc + fn.scale * noise
    if isinstance(fn, _GAUSSIAN_VECTORS):
        return fn.loc + jnp.squeeze(jnp.matmul(fn.scale_tril, noise[..., None]), -1)
    if isinstance(fn, dist.GaussianRandomWalk):
        return jnp.cumsum(jnp.expand_dims(fn.scale, -1) * noise, axis=-1)
    return fn.icdf(ndtr(noise))


# -- recording the program -------------------------------------------------------------------------------------------
class _Stop(Exception):
    """Raised by :class:`_StopAt` once it has what it came for."""


class _StopAt(Messenger):
    """Stop the model at the first message ``predicate(msg)`` selects, keeping ``action(msg)`` in ``result``."""

    def __init__(self, fn, predicate, action):
        self.predicate, self.action, self.result = predicate, action, None
        super().__init__(fn)

    def process_message(self, msg):
        if self.predicate(msg):
            self.result = self.action(msg)
            raise _Stop


class _ControlFlowRecorder(Messenger):
    """Keep every ``control_flow`` message (``scan``, ``cond``) with its result."""

    def __init__(self, fn):
        self.messages = []
        super().__init__(fn)

    def postprocess_message(self, msg):
        if msg["type"] == "control_flow":
            self.messages.append(msg)


@dataclasses.dataclass(frozen=True)
class _Slot:
    """Where a sample site's noise lives: ``u[offset:offset+size]`` (``scan is None``) or, for a site in a scan
    body, entries ``offset:offset+size`` of each step's block."""

    name: str
    shape: tuple
    offset: int
    scan: Optional[int] = None

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclasses.dataclass(frozen=True)
class _Scan:
    length: int
    offset: int  # start of the scan's noise in u
    step_dim: int  # noise entries per step
    sites: tuple  # body sample and deterministic sites, program order
    carry_shapes: tuple
    carry_treedef: Any
    reverse: bool


@dataclasses.dataclass
class _Program:
    """What one traced run of the model shows: its sites (``trace``, whose values are abstract: only shapes, types
    and static attributes are read from it), its scans, the body sites' per-step noise shapes, and why a sample site
    cannot be written as a function of noise (``problems``, checked while the values were being traced)."""

    trace: dict
    scans: list
    step_noise: dict  # body sample site -> per-step noise shape
    problems: dict  # sample site -> ValueError, for the sites that are not differentiable functions of noise
    signature: list


def _problem(name, fn):
    try:
        _check_reparameterisable(name, fn)
    except ValueError as error:
        return error
    return None


def _trace_program(model, args, kwargs, seed: int) -> _Program:
    """Trace ``model`` abstractly (``jax.eval_shape``, no FLOPs, no compilation) with NumPyro's ``seed`` and ``trace``
    handlers; a Python branch on a random value fails here (a ``ValueError`` says so)."""
    holder = {}

    def traced(key):
        step_noise, problems = {}, {}

        def record(msg):  # substitute calls it at every site, and at body sites while scan traces its body
            if msg["type"] == "sample" and msg["infer"].get("_scan_current_index") is not None:
                problems[msg["name"]] = _problem(msg["name"], msg["fn"])
                if problems[msg["name"]] is None:
                    step_noise[msg["name"]] = noise_shape(msg["fn"], msg["kwargs"]["sample_shape"])
            return None

        recorder = _ControlFlowRecorder(model)
        seeded = handlers.seed(handlers.substitute(recorder, substitute_fn=record), rng_seed=key)
        trace = handlers.trace(seeded).get_trace(*args, **kwargs)
        scans = []
        for msg in recorder.messages:
            if getattr(msg["fn"], "__name__", "") != "scan_wrapper":
                raise ValueError("numpyro.contrib.control_flow.cond is not supported: which sites a model draws must "
                                 "not depend on the random values (write the branches with jnp.where)")
            (length, _, carry), (body_trace, _) = msg["value"]
            leaves, treedef = jax.tree_util.tree_flatten(carry)
            scans.append(_Scan(_scan_length(msg), 0, 0, tuple(body_trace.trace),
                               tuple(tuple(np.shape(a)) for a in leaves), treedef, bool(msg["args"][4])))
        for name, site in trace.items():
            if site["type"] == "sample" and name not in problems:
                problems[name] = _problem(name, site["fn"])
        signature = [(name, site["type"], tuple(np.shape(site["value"])), type(site.get("fn")).__name__,
                      bool(site.get("is_observed"))) for name, site in trace.items()]
        signature += [("scan", s.sites, s.length) for s in scans]
        holder["program"] = _Program(trace, scans, step_noise, problems, signature)
        return jnp.zeros(())

    try:
        jax.eval_shape(traced, jax.random.key(seed))
    except jax.errors.JAXTypeError as error:  # a Python `if` / int() / np.asarray on a traced value
        raise ValueError(f"{getattr(model, '__name__', 'model')}: the model's control flow depends on the random "
                         f"values ({type(error).__name__}: {str(error).splitlines()[0]}); dgm needs a fixed set of "
                         "sites with fixed shapes: write value-dependent choices with jnp.where / lax.cond") from error
    return holder["program"]


def _scan_length(msg) -> int:
    """The number of steps of a recorded ``scan`` call (its ``length`` or the leading axis of ``xs``)."""
    length, xs = msg["args"][3], msg["args"][2]
    if length is not None:
        return int(length)
    return int(np.shape(jax.tree_util.tree_leaves(xs)[0])[0])


def _as_jax_data(leaf):
    """Floating-point data (NumPy or JAX arrays) as float64 JAX arrays; anything else unchanged."""
    if isinstance(leaf, (np.ndarray, jax.Array)) and jnp.issubdtype(leaf.dtype, jnp.floating):
        return jnp.asarray(leaf, jnp.float64)
    return leaf


def _describe_difference(first: list, second: list) -> str:
    for a, b in zip(first, second):
        if a != b:
            return f"site {a[0]!r} ({a[1:]}) vs {b[0]!r} ({b[1:]})"
    longer = first if len(first) > len(second) else second
    return f"site {longer[min(len(first), len(second))][0]!r} appears in one run only"


# -- the bridge ------------------------------------------------------------------------------------------------------
def from_numpyro(numpyro_model: Callable, *model_args, observed=("x",), structure: str = "auto",
                 **model_kwargs) -> GenerativeModel:
    """A :class:`dgm.GenerativeModel` whose inputs are the noise of ``numpyro_model``'s sample sites (module doc).

    Args:
      numpyro_model: a NumPyro model (a Python callable using ``numpyro.sample`` / ``deterministic`` / ``plate`` /
        ``contrib.control_flow.scan``).
      *model_args, **model_kwargs: the arguments it is called with (data, sizes), fixed for the model returned.
      observed: the names of the sites that make ``x``, in this order: sample sites (with or without ``obs=``; the
        ``obs`` value is not used, ``x_obs`` given to :func:`dgm.sample` is) or ``numpyro.deterministic`` sites.
        Every sample site with ``obs=`` must be listed. A single name may be given as a string.
      structure: ``"auto"`` (detect a Markov ``scan`` or a plate of independent observations), ``"markov"``,
        ``"independent"`` (required: ``ValueError`` if it does not apply) or ``"dense"``.

    Returns:
      a model with ``generator(u)`` = the observed sites' values flattened and concatenated in ``observed`` order,
      ``latents(u)`` = every other sample and deterministic site's value (program order, flattened), ``u ~ N(0, I)``,
      and ``latent_sites`` / ``observed_sites`` naming the blocks, so ``dgm.sample`` accepts ``x_obs`` as an array or
      a ``{site: value}`` dict and ``result.to_arviz()`` has one posterior variable per site, named and shaped as in
      NumPyro.

    Raises:
      ValueError: an observed name that is not a site, an ``obs=`` site not listed, a site that is not a
        differentiable function of continuous noise, a subsampled plate, a ``param`` / ``factor`` site, site structure
        that changes with the random values, or a ``structure`` that was asked for and does not apply.
    """
    observed = (observed,) if isinstance(observed, str) else tuple(observed)
    if not observed:
        raise ValueError("observed must name at least one site")
    if len(set(observed)) != len(observed):
        raise ValueError(f"observed names a site twice: {observed}")
    if structure not in STRUCTURES:
        raise ValueError(f"structure must be one of {STRUCTURES}, got {structure!r}")
    name = getattr(numpyro_model, "__name__", "numpyro-model")
    with float64():
        # floating data become float64 JAX arrays once, here: float32 data would mix dtypes in scan carries, and JAX
        # caches the device copy of a NumPy constant, so one first copied outside float64 (e.g. by an earlier NumPyro
        # run) would reach the float64 programs as float32
        model_args, model_kwargs = jax.tree_util.tree_map(_as_jax_data, (model_args, model_kwargs))
        program = _trace_program(numpyro_model, model_args, model_kwargs, seed=0)
        other = _trace_program(numpyro_model, model_args, model_kwargs, seed=1)
        if program.signature != other.signature:
            raise ValueError(f"{name}: the model's sites change from one run to the next (two seeded runs differ at "
                             f"{_describe_difference(program.signature, other.signature)}); dgm needs a fixed set "
                             "of sites with fixed shapes (use jnp.where / lax.cond on values, not Python branches)")
        bridge = _Bridge(numpyro_model, model_args, model_kwargs, observed, program, name)
        return bridge.build(structure)


class _Bridge:
    """The input layout of one NumPyro model and the functions built on it."""

    def __init__(self, model, args, kwargs, observed, program: _Program, name: str):
        self.model, self.args, self.kwargs, self.observed, self.name = model, args, kwargs, observed, name
        trace = program.trace
        self._check_sites(trace, observed)
        for problem in program.problems.values():
            if problem is not None:
                raise problem
        in_scan = {site: k for k, scan in enumerate(program.scans) for site in scan.sites}
        self.slots, offset = {}, 0
        for site_name, site in trace.items():  # u1: latent sample sites outside scan
            if site["type"] == "sample" and site_name not in observed and site_name not in in_scan:
                self.slots[site_name] = _Slot(site_name, noise_shape(site["fn"], site["kwargs"]["sample_shape"]),
                                              offset)
                offset += self.slots[site_name].size
        self.n_parameter_inputs = offset
        self.scans = []
        for k, scan in enumerate(program.scans):  # v: each scan's noise, step by step
            step = 0
            for site_name in scan.sites:
                if site_name in program.step_noise:
                    shape = program.step_noise[site_name]
                    self.slots[site_name] = _Slot(site_name, shape, step, k)
                    step += math.prod(shape)
            self.scans.append(dataclasses.replace(scan, offset=offset, step_dim=step))
            offset += scan.length * step
        for site_name in observed:  # w: observed sample sites outside scan
            site = trace[site_name]
            if site["type"] == "sample" and site_name not in in_scan:
                self.slots[site_name] = _Slot(site_name, noise_shape(site["fn"], site["kwargs"]["sample_shape"]),
                                              offset)
                offset += self.slots[site_name].size
        if offset == 0:
            raise ValueError(f"{name}: the model has no random sample sites, so there is nothing to infer")
        self.input_dim = offset
        self.latent_names = tuple(n for n, s in trace.items()
                                  if s["type"] in ("sample", "deterministic") and n not in observed)
        self.in_scan = in_scan
        self.trace = trace
        try:
            shapes = jax.eval_shape(self.site_values, jax.ShapeDtypeStruct((offset,), jnp.float64))
        except jax.errors.JAXTypeError as error:  # a Python `if` on a traced value and its kin
            raise ValueError(f"{name}: the model's control flow depends on the random values ({type(error).__name__}:"
                             f" {str(error).splitlines()[0]}); write it with jnp.where / lax.cond") from error
        self.shapes = {n: tuple(s.shape) for n, s in shapes.items()}
        for site_name in observed:
            if not jnp.issubdtype(shapes[site_name].dtype, jnp.floating):
                raise ValueError(f"observed site {site_name!r} has dtype {shapes[site_name].dtype}: observed values "
                                 "must be real-valued (a differentiable function of the inputs)")

    # -- checks -------------------------------------------------------------------------------------------------
    def _check_sites(self, trace: dict, observed) -> None:
        for site_name in observed:
            if site_name not in trace:
                candidates = [n for n, s in trace.items() if s["type"] in ("sample", "deterministic")]
                raise ValueError(f"observed site {site_name!r} is not a site of {self.name}; its sample and "
                                 f"deterministic sites are {candidates}")
            if trace[site_name]["type"] not in ("sample", "deterministic"):
                raise ValueError(f"observed site {site_name!r} is a {trace[site_name]['type']} site; only sample and "
                                 "deterministic sites can be observed")
        for site_name, site in trace.items():
            if site["type"] == "param":
                raise ValueError(f"site {site_name!r} is a numpyro.param: fix its value first "
                                 "(numpyro.handlers.substitute(model, data={...})) or make it a sample site")
            if site["type"] == "plate":
                size, subsample_size = site["args"]
                if subsample_size is not None and subsample_size != size:
                    inside = [n for n, s in trace.items() if s["type"] == "sample"
                              and any(f.name == site_name for f in s.get("cond_indep_stack", ()))]
                    raise ValueError(f"site {inside[0] if inside else site_name!r} is in plate {site_name!r} "
                                     f"subsampled with subsample_size={subsample_size} of {size}: a subsample is a "
                                     "random choice of data, not a function of continuous noise; drop subsample_size")
            if site["type"] == "sample" and isinstance(site["fn"], dist.Unit):
                raise ValueError(f"site {site_name!r} is a numpyro.factor term: dgm conditions a generator on its "
                                 "outputs and has no place for extra log-density terms")
            if site["type"] == "sample" and site.get("is_observed") and site_name not in observed:
                raise ValueError(f"site {site_name!r} has obs= but is not in observed={tuple(observed)}: list it "
                                 "(its value becomes an output conditioned on) or drop obs=")

    # -- the generator ----------------------------------------------------------------------------------------------
    def _substitute_fn(self, u, step_noise=None):
        def site_value(msg):
            if msg["type"] != "sample":
                return None
            slot = self.slots.get(msg["name"])
            if slot is None:
                raise ValueError(f"{self.name}: site {msg['name']!r} was not drawn when the model was traced: its "
                                 "sites depend on the random values")
            if slot.scan is not None and step_noise is None:
                scan = self.scans[slot.scan]
                block = u[scan.offset:scan.offset + scan.length * scan.step_dim].reshape(scan.length, scan.step_dim)
                index = msg["infer"]["_scan_current_index"]
                if scan.reverse:
                    index = scan.length - 1 - index
                noise = jax.lax.dynamic_index_in_dim(block, index, keepdims=False)
                noise = noise[slot.offset:slot.offset + slot.size].reshape(slot.shape)
            elif slot.scan is not None:
                noise = step_noise[slot.offset:slot.offset + slot.size].reshape(slot.shape)
            else:
                noise = u[slot.offset:slot.offset + slot.size].reshape(slot.shape)
            return value_from_noise(msg["fn"], noise)

        return site_value

    def run(self, u):
        """The model's trace with every sample site's value computed from ``u``."""
        with handlers.trace() as trace:
            handlers.substitute(self.model, substitute_fn=self._substitute_fn(u))(*self.args, **self.kwargs)
        return trace

    def site_values(self, u) -> dict:
        trace = self.run(u)
        return {n: trace[n]["value"] for n in self.latent_names + self.observed}

    def generator(self, u):
        trace = self.run(u)
        return jnp.concatenate([jnp.ravel(jnp.asarray(trace[n]["value"], u.dtype)) for n in self.observed])

    def latents(self, u):
        trace = self.run(u)
        parts = [jnp.ravel(jnp.asarray(trace[n]["value"], u.dtype)) for n in self.latent_names]
        return jnp.concatenate(parts) if parts else jnp.zeros((0,), u.dtype)

    # -- structure ----------------------------------------------------------------------------------------------
    def _run_until(self, substitute_fn, predicate, action, *, with_trace: bool = False):
        """Run the model with ``substitute_fn`` until the message ``predicate`` selects; ``action(msg)`` (and, with
        ``with_trace``, the sites drawn before it). Nothing reaches handlers outside (``block``)."""
        stopper = _StopAt(self.model, predicate, action)  # innermost: it sees each message first
        with handlers.block(), handlers.trace() as trace:
            try:
                handlers.substitute(stopper, substitute_fn=substitute_fn)(*self.args, **self.kwargs)
            except _Stop:
                return (stopper.result, trace) if with_trace else stopper.result
        raise ValueError(f"{self.name}: the model finished before reaching the site the structure needs")

    def _prefix_values(self, u1, predicate):
        """Values of the sample sites drawn before the message ``predicate`` selects, from parameter noise ``u1``."""
        _, trace = self._run_until(self._substitute_fn(u1), predicate, lambda msg: None, with_trace=True)
        return {n: s["value"] for n, s in trace.items() if s["type"] == "sample"}

    @staticmethod
    def _given(values):
        def site_value(msg):
            if msg["type"] != "sample":
                return None
            if msg["name"] not in values:
                raise ValueError(f"site {msg['name']!r} is drawn before the structure's step; it must come first")
            return values[msg["name"]]

        return site_value

    def markov_structure(self) -> MarkovStructure:
        """The declaration of :mod:`dgm.structure` for observations that are a ``scan``'s carried state."""
        if len(self.scans) != 1:
            raise ValueError(f"the Markov structure needs exactly one scan, the model has {len(self.scans)}")
        scan = self.scans[0]
        if scan.reverse:
            raise ValueError("the Markov structure needs a forward scan (reverse=False)")
        L, E, T = self.n_parameter_inputs, scan.step_dim, scan.length
        D = sum(math.prod(s) for s in scan.carry_shapes)
        if L == 0:
            raise ValueError("the Markov structure needs at least one latent site outside the scan (its parameters)")
        if self.input_dim != L + T * E:
            raise ValueError("observed sample sites outside the scan: their noise does not belong to any step")
        if E != D:
            raise ValueError(f"the scan draws {E} noise entries per step for a carried state of {D} entries: the "
                             "linear-time geometry needs them equal")
        is_scan = lambda msg: msg["type"] == "control_flow"  # noqa: E731
        treedef, shapes = scan.carry_treedef, scan.carry_shapes

        def unravel(x):
            sizes = np.cumsum([0] + [math.prod(s) for s in shapes])
            return jax.tree_util.tree_unflatten(treedef, [x[a:b].reshape(s) for a, b, s in
                                                          zip(sizes[:-1], sizes[1:], shapes)])

        def ravel(carry, dtype):
            return jnp.concatenate([jnp.ravel(jnp.asarray(a, dtype)) for a in jax.tree_util.tree_leaves(carry)])

        def parameter_transform(u1):
            return self._prefix_values(u1, is_scan)

        def initial_state(z):
            dtype = jnp.result_type(*jax.tree_util.tree_leaves(z))
            return self._run_until(self._given(z), is_scan, lambda msg: ravel(msg["args"][1], dtype))

        def step_fn(x_prev, z, v, t):
            def one_step(msg):
                body, _, xs = msg["args"][:3]
                x_t = jax.tree_util.tree_map(lambda a: a[t], xs)
                with handlers.block():
                    carry, _ = handlers.substitute(body, substitute_fn=self._substitute_fn(None, v))(
                        unravel(x_prev), x_t)
                return ravel(carry, x_prev.dtype)

            return self._run_until(self._given(z), is_scan, one_step)

        return markov_structure(step_fn, initial_state, T, parameter_transform, L, noise_dim=E, indexed=True)

    def independent_structure(self) -> MarkovStructure:
        """The declaration for one observed ``Normal`` / ``MultivariateNormal`` site in a plate of observations."""
        if len(self.observed) != 1:
            raise ValueError("the independent structure needs exactly one observed site")
        site_name = self.observed[0]
        site = self.trace[site_name]
        if site["type"] != "sample" or site_name in self.in_scan:
            raise ValueError(f"observed site {site_name!r} is not a sample site outside scan")
        if self.scans:
            raise ValueError("the model has a scan")
        fn, leaf = site["fn"], _leaf(site["fn"])
        if isinstance(fn, dist.TransformedDistribution) or not isinstance(leaf, (dist.Normal, dist.MultivariateNormal)):
            raise ValueError(f"observed site {site_name!r} is {type(fn).__name__}: the independent structure is "
                             "declared for Normal and MultivariateNormal observations")
        shape = self.shapes[site_name]
        if site["kwargs"]["sample_shape"] or not shape:
            raise ValueError(f"observed site {site_name!r} is not drawn in a plate (use numpyro.plate)")
        axis_zero = [f for f in site["cond_indep_stack"]
                     if len(shape) - fn.event_dim + f.dim == 0 and f.size == shape[0]]
        if not axis_zero:
            raise ValueError(f"observed site {site_name!r}: no plate runs over its first axis")
        N, L = shape[0], self.n_parameter_inputs
        D = math.prod(shape[1:])
        if L == 0:
            raise ValueError("the independent structure needs at least one latent site (its parameters)")
        gaussian_vector = isinstance(leaf, dist.MultivariateNormal)
        if gaussian_vector and (len(shape) != 2 or fn.event_dim != 1):
            raise ValueError(f"observed site {site_name!r}: a MultivariateNormal plate must have shape (N, d)")
        is_site = lambda msg: msg["type"] == "sample" and msg["name"] == site_name  # noqa: E731

        def parameters(msg):
            f = _leaf(msg["fn"])
            if gaussian_vector:
                return (jnp.broadcast_to(f.loc, shape), jnp.broadcast_to(f.scale_tril, shape + shape[-1:]))
            return (jnp.broadcast_to(f.loc, shape).reshape(N, D), jnp.broadcast_to(f.scale, shape).reshape(N, D))

        def parameter_transform(u1):
            return self._run_until(self._substitute_fn(u1), is_site, parameters)

        def observation_fn(z, v, i):
            loc, scale = z[0][i], z[1][i]
            return loc + (scale @ v if gaussian_vector else scale * v)

        return independent_structure(observation_fn, N, parameter_transform, L, noise_dim=D, indexed=True)

    # -- the model ------------------------------------------------------------------------------------------------
    def build(self, structure: str) -> GenerativeModel:
        declared, reasons = None, {}
        kinds = ("markov", "independent") if structure == "auto" else () if structure == "dense" else (structure,)
        for kind in kinds:
            try:
                candidate = self.markov_structure() if kind == "markov" else self.independent_structure()
                positions = jax.random.normal(jax.random.key(0), (3, self.input_dim), jnp.float64)
                candidate.check_generator(self.generator, positions, name=self.name)
                declared = candidate
                break
            except ValueError as error:
                reasons[kind] = str(error)
        if declared is None and structure in ("markov", "independent"):
            raise ValueError(f"{self.name}: structure={structure!r} does not apply: {reasons[structure]}")
        sites = lambda names: tuple((n, self.shapes[n]) for n in names)  # noqa: E731
        L = self.n_parameter_inputs

        def structured_init(key, x_obs):
            # a prior draw of u1, then the noise reproducing x_obs step by step (dgm's initialiser polishes and
            # checks it), as dgm.structure's own models start
            dtype = jnp.result_type(jnp.asarray(x_obs).dtype, jnp.float32)
            u1 = jax.random.normal(key, (L,), dtype)
            v = declared.noise_for_observations(u1, jnp.asarray(x_obs, dtype))
            return jnp.concatenate([u1, v.reshape(-1)])

        return GenerativeModel(
            generator=self.generator,
            input_dim=self.input_dim,
            latents=self.latents,
            init=structured_init if declared is not None else None,
            parameter_inputs=L if 0 < L < self.input_dim else None,
            structure=declared,
            name=self.name,
            latent_names=_flat_names(sites(self.latent_names)),
            latent_sites=sites(self.latent_names),
            observed_sites=sites(self.observed),
        )


def _flat_names(sites) -> tuple:
    """``("beta[0]", "beta[1]", "sigma")``: one name per entry of the flattened site values."""
    return tuple(name if not shape else f"{name}[{','.join(map(str, index))}]"
                 for name, shape in sites for index in (np.ndindex(*shape) if shape else [()]))
