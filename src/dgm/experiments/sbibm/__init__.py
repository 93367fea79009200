"""``dgm sbibm``: the simulation-based-inference benchmark (sbibm 1.1.0; Lueckmann et al., AISTATS 2021) run exactly.

Every sbibm task whose simulator is a differentiable function of continuous noise (:mod:`dgm.models.sbibm`) is
conditioned exactly on sbibm's observations with constrained HMC, and the draws are scored against sbibm's reference
posterior samples with its metrics (:mod:`dgm.diagnostics.two_sample`) as the benchmark does: C2ST between the
10,000 reference draws and as many sampler draws (the chains' draws thinned evenly to that number), and MMD.

The method per task is the command's choice (:data:`METHODS`): ``chmc-tempered`` for the multimodal posteriors
(``two_moons``: two crescents; ``slcp``: four modes), ``chmc`` elsewhere; ``--method TASK=METHOD`` overrides it.
Per run it records C2ST, MMD, times (set-up, compilation, sampling), the largest split R-hat of the parameters and
every warning dgm issued; it writes ``results.json`` (after every run, so a long run can be continued with
``--resume``), ``table.txt``, ``report.md``, ``c2st.png`` and the draws (``draws/*.npy``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from dgm.experiments.sbibm.experiment import METHODS, REFERENCE_DRAWS

NAME = "sbibm"
HELP = "the SBI benchmark's differentiable tasks conditioned exactly, scored with sbibm's C2ST and MMD"
DESCRIPTION = (
    "Condition the differentiable tasks of the simulation-based-inference benchmark sbibm 1.1.0 (gaussian_linear, "
    "gaussian_linear_uniform, two_moons, slcp, lotka_volterra; sbibm's ODE version via diffrax) exactly on sbibm's "
    "observations with constrained HMC (chmc-tempered on the multimodal two_moons and slcp, chmc elsewhere), and "
    "score the draws against sbibm's reference posteriors with its C2ST (sklearn MLP, z-scored, 5 folds, seed 1; "
    "10,000 reference draws against as many dgm draws) and MMD. Needs the sbibm wheel's files: "
    "`pip install --no-deps sbibm==1.1.0` (nothing is downloaded). Prints a table (task x observation x seed: C2ST, "
    "MMD, time, method, warnings) and writes results.json, table.txt, report.md, c2st.png (C2ST per task) and "
    "draws/*.npy to --out. Default: every task on observation 1, one seed (sbibm's C2ST, an MLP trained in 5 folds "
    "on 16,000 points, dominates the time of the 10-dimensional tasks); --quick: "
    "one task, one observation, few draws, C2ST on 1,000 draws; --all: all 5 tasks x 10 observations; --paper: "
    "--all with 3 seeds. Tasks without a differentiable simulator (bernoulli_glm, sir, gaussian_mixture, "
    "slcp_distractors) are listed with the reason (--list)."
)

PRESETS = {
    "quick": {"tasks": "two_moons", "observations": "1", "seeds": 1, "chains": 4, "warmup": 100,
              "samples": 250, "thin": 1, "c2st_draws": 1000, "mmd": True},
    "default": {"tasks": "all", "observations": "1", "seeds": 1, "chains": 4, "warmup": 500, "samples": 2500,
                "thin": 2, "c2st_draws": REFERENCE_DRAWS, "mmd": True},
    "paper": {"tasks": "all", "observations": "1-10", "seeds": 3, "chains": 4, "warmup": 500, "samples": 2500,
              "thin": 2, "c2st_draws": REFERENCE_DRAWS, "mmd": True},
}
"""Sizes: --quick / (none) / --paper. ``samples`` is per chain; ``chains * samples`` must reach ``c2st_draws``."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The experiment's own options (the shared ``--out --seed --quick --paper --no-progress`` are cli.py's)."""
    from dgm.models.sbibm.tasks import TASKS

    parser.add_argument("--tasks", default=None,
                        help=f"comma-separated tasks, or 'all' ({', '.join(TASKS)})")
    parser.add_argument("--observations", default=None,
                        help="sbibm observation numbers: '1', '1,3', '1-10' (--all: 1-10)")
    parser.add_argument("--all", action="store_true",
                        help="all 5 tasks x 10 observations (the benchmark's full grid)")
    parser.add_argument("--seeds", type=int, default=None,
                        help="seeds per task x observation: --seed, --seed + 1, ... (--paper: 3)")
    parser.add_argument("--chains", type=int, default=None, help="chains per run")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up iterations per chain (discarded)")
    parser.add_argument("--samples", type=int, default=None,
                        help="draws kept per chain (4 x 2500 = the 10,000 C2ST draws)")
    parser.add_argument("--thin", type=int, default=None, help="iterations per kept draw")
    parser.add_argument("--c2st-draws", type=int, default=None,
                        help="reference draws and dgm draws (thinned evenly from all chains) given to C2ST and MMD; "
                             "sbibm uses 10,000")
    parser.add_argument("--mmd", action=argparse.BooleanOptionalAction, default=None,
                        help="also score MMD (sbibm's unbiased MMD^2; --no-mmd: C2ST only)")
    parser.add_argument("--method", action="append", default=[], metavar="TASK=METHOD",
                        help="run METHOD (a dgm.sample method; METHOD+symmetries on two_moons or slcp also declares "
                             "the task's exact symmetries, flipped with probability 1/2) on TASK instead of the "
                             "default " + ", ".join(f"{t}={m}" for t, m in METHODS.items()))
    parser.add_argument("--baselines", type=Path, default=None, metavar="CSV",
                        help="published C2ST numbers to draw beside dgm's (columns task,algorithm,c2st)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the runs already in --out/results.json made with the same settings; run the rest")
    parser.add_argument("--list", action="store_true",
                        help="list the tasks (with the method used) and the tasks left out (with the reason), "
                             "then stop")


def _fill_preset(args) -> argparse.Namespace:
    """Options still unset take the preset's values (:mod:`dgm.cli` has already applied them; this keeps
    ``run(args)`` right when called with a bare namespace), and ``--all`` widens to 5 tasks x 10 observations."""
    size = getattr(args, "size", None) or ("quick" if getattr(args, "quick", False)
                                           else "paper" if getattr(args, "paper", False) else "default")
    values = dict(vars(args))
    for key, value in PRESETS[size].items():
        if values.get(key) is None:
            values[key] = value
    if values.get("all"):
        values["tasks"], values["observations"] = "all", "1-10"
    return argparse.Namespace(**values)


def _settings_key(args, methods) -> dict:
    return {"chains": args.chains, "warmup": args.warmup, "samples": args.samples, "thin": args.thin,
            "c2st_draws": args.c2st_draws, "mmd": bool(args.mmd), "methods": methods}


def _list_tasks(methods) -> str:
    from dgm.models.sbibm import NOT_DIFFERENTIABLE, get_task

    lines = ["differentiable tasks (method used):"]
    for name, method in methods.items():
        task = get_task(name)
        lines.append(f"  {name}: {task.n_parameters} parameters, {task.n_data} data, {task.input_dim} inputs -> "
                     f"{method}")
    lines.append("left out (no differentiable simulator):")
    lines += [f"  {name}: {why}" for name, why in NOT_DIFFERENTIABLE.items()]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run the chosen tasks x observations x seeds; print and write the table, figure, results.json, report.md."""
    from dgm.experiments.sbibm.experiment import (
        TARGET_C2ST, Run, parse_methods, parse_observations, parse_tasks, run_one,
    )
    from dgm.experiments.options import require_at_least
    from dgm.experiments.sbibm.report import (
        figure, read_baselines, summary_table, table, write_report, write_results,
    )
    from dgm.models.sbibm import sbibm_root

    args = _fill_preset(args)
    methods = parse_methods(args.method)
    if args.list:
        print(_list_tasks(methods))
        return 0
    sbibm_root()  # a clear error with the install command before anything runs
    tasks = parse_tasks(args.tasks)
    observations = parse_observations(args.observations)
    require_at_least(args, 1, "seeds", "chains", "samples", "thin", "c2st_draws")
    require_at_least(args, 0, "warmup")
    if args.chains * args.samples < args.c2st_draws:
        raise ValueError(f"--chains x --samples = {args.chains * args.samples} draws is fewer than --c2st-draws "
                         f"{args.c2st_draws}")
    baselines = read_baselines(args.baselines) if args.baselines is not None else None
    out = Path(getattr(args, "out", None) or "results/sbibm")
    out.mkdir(parents=True, exist_ok=True)
    base_seed = int(getattr(args, "seed", None) or 0)
    seeds = [base_seed + i for i in range(args.seeds)]
    progress = not getattr(args, "no_progress", False)
    command = getattr(args, "command_line", None) or "dgm sbibm " + " ".join(map(shlex.quote, sys.argv[1:]))
    settings = _settings_key(args, {t: methods[t] for t in tasks})

    done = {}
    if args.resume and (out / "results.json").exists():
        previous = json.loads((out / "results.json").read_text())
        same = all(previous["settings"].get(k) == v for k, v in settings.items() if k != "methods")
        for record in previous.get("runs", []) if same else []:
            if previous["settings"]["methods"].get(record["task"]) == methods.get(record["task"]):
                done[(record["task"], record["observation"], record["seed"])] = Run(**record)
    runs = []
    for task in tasks:
        for observation in observations:
            for seed in seeds:
                key = (task, observation, seed)
                if key in done:
                    runs.append(done[key])
                    continue
                print(f"== {task}, observation {observation}, seed {seed}: {methods[task]}", file=sys.stderr)
                r = run_one(task, observation, seed, methods[task], chains=args.chains, warmup=args.warmup,
                            samples=args.samples, thin=args.thin, c2st_draws=args.c2st_draws, with_mmd=args.mmd,
                            progress=progress, draws_dir=out / "draws")
                print(f"   C2ST {r.c2st:.3f}" + ("" if r.mmd is None else f", MMD {r.mmd:.2e}")
                      + f"; {r.total_time:.1f} s sampling (+{r.metric_time:.1f} s metrics); R-hat {r.max_rhat:.3f}",
                      file=sys.stderr)
                runs.append(r)
                write_results(out, command, settings, runs)
    write_results(out, command, settings, runs)
    (out / "table.txt").write_text(table(runs) + "\n\n" + summary_table(runs) + "\n")
    figure_path = figure(runs, out / "c2st.png", baselines)
    write_report(out, command, settings, runs, figure_path, baselines is not None)
    print(table(runs))
    print()
    print(summary_table(runs))
    missed = [r for r in runs if not r.c2st <= TARGET_C2ST]
    print(f"\n{len(runs) - len(missed)} of {len(runs)} runs reach C2ST <= {TARGET_C2ST}; wrote results.json, "
          f"table.txt, report.md, c2st.png to {out}")
    return 0
