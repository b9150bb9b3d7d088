"""Submit training jobs: a cluster profile and an experiment, planned, checked against the live cluster, submitted.

    python launch/submit.py --profile local                          # train here (no Slurm), follow it, evaluate
    python launch/submit.py --profile local-slurm --experiment configs/experiments/debug.yaml --wait
    python launch/submit.py --profile v100x8 --set train.max_steps=20000 --set profile.time_limit=12h
    python launch/submit.py --profile a100x8 --launcher fsdp --nodes 2 --dry-run [--json]
    python launch/submit.py --profile v100x8 --diff a100x8                  # what changes on the other node type
    python launch/submit.py --profile a100x8 --experiment configs/experiments/memory_mixer_d1024.yaml --dependency afterok:1234
    python launch/submit.py --list-profiles
    python launch/submit.py --profile local-slurm --no-snapshot        # run from the checkout, not a code snapshot
    python launch/submit.py --profile local --set train.max_steps=2400 --extend   # the demo's run, longer

Which value wins, lowest first: the experiment file; what the profile decides for the experiment (``train.precision``
from its ``precision``, ``output.checkpoint_root`` from its ``checkpoint_root``, ``data.cache_dir`` (where a corpus
is prepared, once for every code snapshot) from its ``data_root``, relative data directories taken under it); then
``--set``. ``--set profile.KEY=VALUE`` changes a profile key (``profile.time_limit=2h``,
``profile.partition=debug``) before the profile is validated; every other ``--set KEY=VALUE`` is an experiment key
(``train.max_steps=100``). ``--launcher`` and ``--nodes`` replace the profile's defaults. A precision the profile's
GPUs cannot train in is refused, however it was asked for.

The job is planned once (``launch.planning``); ``--dry-run`` prints that plan after the same checks a submission
makes (``launch.submission.preflight``: the data, the checkpoint root and, when a cluster answers, the partition,
node sizes, time limit, array size, dependencies and ``sbatch --test-only``; without a cluster it says the cluster
checks were not run). A submission writes and submits exactly the plan, prints the job id, run directory, log paths
and how to watch it (``--json``: one object) and records it in the journal. With the ``local`` profile the run is
followed in the foreground and evaluated at the end.

Resubmitting: the same command resumes an unfinished run from its newest checkpoint; a run with nothing left to do
(completed and evaluated) is refused with its result (exit 3; other refusals exit 2). ``--extend`` continues a run to a longer ``train.max_steps`` in
its own directory (``memorymodels.extension``: one metrics curve, the learning rate's rule in the plan and run.json);
without it, a run that differs from an existing one only in ``train.max_steps`` is a new run, and the command says
which one it differs from before submitting.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from launch.cli.args import Parser
from launch.cli.output import exit_quietly_on_a_closed_pipe
from launch.cli.sweep import run_sweep_command
from launch.monitor.follow import follow_local, wait_slurm
from launch.planning.diff import diff_plans
from launch.planning.plan import JobPlan, plan_job, split_overrides
from launch.planning.profiles import list_profiles, load_profile
from launch.slurm.client import slurm_environ
from launch.submission.preflight import NothingLeftError, SubmitError, nothing_left, preflight
from launch.submission.submit import submit_job
from memorymodels.configuration import ConfigError, count, flag_number, one_line
from memorymodels.fileio import exits_on_full_disk

EXIT_NOTHING_LEFT = 3
"""Exit status when the run has nothing left to do (completed and evaluated): its result is printed, nothing queued.
Other refusals exit 2."""
NOT_IN_REQUEST = ("--dry-run", "--json", "--wait", "--no-preflight", "--new-code", "--yes")
"""Flags that change what the command does now, not the job it plans (left out of the script's "Run with")."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = Parser(prog="python launch/submit.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Override rule: " + __doc__.split("\n\n")[2])
    parser.add_argument("--profile", help=f"cluster profile: {', '.join(list_profiles())}, or a .yaml path")
    parser.add_argument("--experiment", help="experiment YAML (default configs/experiments/autoencoder.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="experiment key (train.max_steps=100) or profile key (profile.time_limit=2h); repeatable")
    parser.add_argument("--launcher", choices=("torchrun", "fsdp", "deepspeed"), help="default: the profile's")
    parser.add_argument("--nodes", type=flag_number(int, minimum=1), help="nodes per job (default: the profile's)")
    parser.add_argument("--dry-run", action="store_true", help="check and print the plan; submit nothing")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--wait", action="store_true", help="follow a Slurm job until it ends (local always does)")
    parser.add_argument("--no-preflight", action="store_true", help="skip the checks against the live cluster")
    parser.add_argument("--dependency", metavar="SPEC",
                        help="start after other jobs, in Slurm's syntax: afterok:1234 (once 1234 succeeded), "
                             "afterany:1234:1240, afterok:SUBMISSION_ID (every job of a journal submission), singleton")
    parser.add_argument("--no-snapshot", action="store_true",
                        help="run the job from the checkout as it is when each attempt starts, instead of a snapshot "
                             "of the code taken now (<checkpoint_root>/.code/<hash>); for iterating on a branch")
    parser.add_argument("--yes", action="store_true",
                        help="with --sweep: submit a sweep larger than the profile's ask_above_cells without asking")
    parser.add_argument("--new-code", action="store_true",
                        help="continue a run that was submitted with other code with the checkout's code now")
    parser.add_argument("--extend", action="store_true",
                        help="continue the run this experiment is except for a shorter train.max_steps, in its run "
                             "directory, from its newest complete checkpoint, to the --set train.max_steps given")
    parser.add_argument("--sweep", help="a sweep file (sweeps/*.yaml): submit its cells as job arrays")
    parser.add_argument("--diff", metavar="PROFILE",
                        help="show how the job planned on PROFILE differs from the one on --profile (the same "
                             "experiment, --set, --launcher and --nodes); submits nothing")
    parser.add_argument("--list-profiles", action="store_true", help="list the shipped profiles and exit")
    args = parser.parse_args(argv)
    if args.diff and args.sweep:
        parser.error("--diff compares the job of one experiment on two profiles; drop --sweep (a sweep's cells share "
                     "one profile: --sweep ... --dry-run shows them)")
    if args.extend and args.sweep:
        parser.error("--extend continues one run (--experiment); a sweep submitted again runs its unfinished cells "
                     "only")
    if not args.list_profiles and not args.profile and not args.sweep:
        parser.error(f"--profile is required; profiles: {', '.join(list_profiles())}")
    args.request = request_of(sys.argv[1:] if argv is None else argv)
    return args


def request_of(argv: list[str]) -> str:
    """The command line that plans the same job again (what the sbatch script's header says)."""
    return shlex.join(["python", "launch/submit.py", *[a for a in argv if a not in NOT_IN_REQUEST]])


def plan_from_args(args: argparse.Namespace) -> JobPlan:
    """The plan the command line asks for (``--set profile.*`` to the profile, the rest to the experiment)."""
    profile_overrides, experiment_overrides = split_overrides(args.overrides)
    profile = load_profile(args.profile, profile_overrides)
    return plan_job(profile, args.experiment, overrides=experiment_overrides, launcher=args.launcher,
                    nodes=args.nodes, dependency=args.dependency, request=getattr(args, "request", None),
                    snapshot=not getattr(args, "no_snapshot", False), extend=getattr(args, "extend", False))


def _print_submitted(entry: dict, plan: JobPlan, out=sys.stdout) -> None:
    job_id = entry["job_id"]
    print(f"submitted job {job_id} ({plan.profile.name}, {plan.launcher}, {plan.nodes} node(s) x "
          f"{plan.procs_per_node} process(es))", file=out)
    print(f"  run dir  {plan.run_dir}", file=out)
    print(f"  stdout   {entry['stdout']}", file=out)
    print(f"  stderr   {entry['stderr']}", file=out)
    if plan.executor == "slurm":
        print(f"  watch    python launch/status.py   |  squeue -j {job_id}  |  tail -f {shlex.quote(entry['stdout'])}",
              file=out)
        print(f"  history  python launch/status.py --history {job_id}", file=out)


def dry_run(plan: JobPlan, args: argparse.Namespace) -> int:
    """``--dry-run``: the checks a submission makes; the plan, then the problems found (exit 2, one line each)."""
    checked = preflight([plan], dry_run=True, new_code=args.new_code) if not args.no_preflight else None
    if args.json:
        print(json.dumps({**plan.to_json(), "cluster_checks": _cluster_note(checked, plan)}, indent=2,
                         sort_keys=True))
    else:
        print(plan.describe())
        print(f"\n# checks: {_cluster_note(checked, plan)}")
    if checked is not None:
        sys.stdout.flush()  # the plan, then the problems, also when both go to one terminal or file
        checked.raise_problems()
    return 0


def _cluster_note(checked, plan: JobPlan) -> str:
    if checked is None:
        return "not run (--no-preflight)"
    found = f"; {count(len(set(checked.problems)), 'problem')} found (below)" if checked.problems else ""
    if plan.executor != "slurm":
        return "data and checkpoint root checked; no cluster (executor: local)" + found
    return (checked.skipped or "data, checkpoint root and cluster checked (partition, node sizes, time limit, "
                               "sbatch --test-only)") + found


@exits_on_full_disk
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.dry_run or args.diff or args.list_profiles:  # only prints: `--dry-run | head` ends quietly (a submission
        exit_quietly_on_a_closed_pipe()                  # is never cut short by its reader going away)
    if args.list_profiles:
        for name in list_profiles():
            print(f"{name:<20} {load_profile(name).description}")
        return 0
    if args.sweep:
        return run_sweep_command(args)
    try:
        if args.diff:  # each plan's script says how to make that plan alone, not this comparison
            args.request = None
        plan = plan_from_args(args)
        if args.diff:
            try:
                other = plan_from_args(argparse.Namespace(**{**vars(args), "profile": args.diff}))
            except ConfigError as exc:
                raise ConfigError(f"--diff {args.diff}: {exc}") from None
            print(diff_plans(plan, other))
            return 0
        done = nothing_left(plan)
        if done:
            raise NothingLeftError(done)
        if args.dry_run:
            return dry_run(plan, args)
        if plan.note:
            print(f"note: {plan.note}", file=sys.stderr if args.json else sys.stdout)
        if not args.no_preflight:
            preflight([plan], new_code=args.new_code).raise_problems()
        submission = submit_job(plan, new_code=args.new_code)
    except (ConfigError, SubmitError) as exc:
        print(f"error: {one_line(exc) if isinstance(exc, ConfigError) else exc}", file=sys.stderr)
        return EXIT_NOTHING_LEFT if isinstance(exc, NothingLeftError) else 2
    entry = submission.jobs[0]
    if args.json:
        print(json.dumps({"submission_id": submission.submission_id, **entry}, sort_keys=True))
    else:
        _print_submitted(entry, plan)
    out = sys.stderr if args.json else sys.stdout
    if plan.executor == "local":
        return follow_local(submission.handles[entry["job_id"]], entry, out=out)
    if args.wait:
        state = wait_slurm(entry, env=slurm_environ(plan.profile.slurm_conf_path()), out=out)
        return 0 if state in ("COMPLETED", "UNKNOWN") else 1
    return 0
