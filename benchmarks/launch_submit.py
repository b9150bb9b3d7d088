"""Launcher costs on the local Slurm cluster: planning, and N jobs submitted as one array (one sbatch) vs N sbatch calls.

    N=20 .venv/bin/python benchmarks/launch_submit.py     # local cluster up: python launch/local_cluster.py up

The jobs are submitted held and cancelled at once, so only submission is timed; both ways are timed side by side in
each round. Results: BENCHMARKS.md.
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from launch.localcluster.cluster import slurm_environ  # noqa: E402
from launch.planning.plan import plan_job  # noqa: E402
from launch.planning.profiles import load_profile  # noqa: E402
from launch.planning.sweep import plan_arrays, plan_sweep  # noqa: E402
from launch.planning.sweep_file import load_sweep  # noqa: E402
from launch.records import journal  # noqa: E402
from launch.submission.preflight import preflight  # noqa: E402
from launch.submission.submit import submit_arrays, submit_job  # noqa: E402
from launch.submission.sweep import sweep_record  # noqa: E402

N = int(os.environ.get("N", 20))
EXPERIMENT = "configs/experiments/debug.yaml"


def held_profile(root: Path):
    return load_profile("local-slurm", [f"checkpoint_root={root}", "sbatch_extra={hold: true}"])


def plans(root: Path, tag: str) -> list:
    """N held jobs of the debug experiment, each in its own run directory."""
    return [plan_job(held_profile(root), EXPERIMENT, overrides=[f"train.max_steps={10 + i}"],
                     run_dir=root / tag / f"cell{i}") for i in range(N)]


def array(root: Path, tag: str):
    """The same N jobs as the cells of one sweep, planned as one array."""
    path = root / f"{tag}.yaml"
    path.write_text(f"experiment: {Path(EXPERIMENT).resolve()}\noverrides: {{output.checkpoint_root: {root}}}\n"
                    f"grid: {{train.max_steps: {[10 + i for i in range(N)]}}}\n")
    plan = plan_sweep(load_sweep(path), held_profile(root))
    submission_id = journal.new_submission_id()
    return plan, plan_arrays(plan, plan.pending, submission_id), submission_id


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-launch-"))
    env = slurm_environ()  # before MEMORYMODELS_STATE moves: the local cluster lives in the project's state folder
    os.environ["SLURM_CONF"] = env["SLURM_CONF"]
    os.environ["MEMORYMODELS_STATE"] = str(root / "state")
    _, plan_s = timed(lambda: plans(root, "warm"))
    for rnd in range(2):
        (sweep, arrays, sid), single_plans = array(root, f"array{rnd}"), plans(root, f"single{rnd}")
        sub, t_array = timed(lambda: submit_arrays(sweep, arrays, sweep=sweep_record(sweep), submission_id=sid))
        singles, t_single = timed(lambda: [submit_job(p).jobs[0]["job_id"] for p in single_plans])
        first = plans(root, f"pre{rnd}")[0]
        _, t_pre1 = timed(lambda: (preflight([first]).raise_problems(), submit_job(first)))
        array_ids = sorted({job["job_id"].split("_")[0] for job in sub.jobs})
        subprocess.run(["scancel", *array_ids, *singles], env=env)
        subprocess.run(["scancel", "--name", "cell0"], env=env)  # the job submitted with its preflight
        print(f"round {rnd}: array of {N} {t_array:.2f}s, {N} single jobs {t_single:.2f}s, "
              f"ratio {t_single / t_array:.1f}x, one job with preflight {t_pre1:.2f}s", flush=True)
    print(f"planning: {plan_s / N * 1000:.1f} ms per job (plan_job, {N} jobs)")


if __name__ == "__main__":
    main()
