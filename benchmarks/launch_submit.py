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

from launch.slurm.client import slurm_environ  # noqa: E402
from launch.planning.plan import plan_job  # noqa: E402
from launch.planning.profiles import load_profile  # noqa: E402
from launch.submission.submit import submit_plans  # noqa: E402

N = int(os.environ.get("N", 20))
EXPERIMENT = "configs/experiments/debug.yaml"


def plans(root: Path, tag: str) -> list:
    """N held jobs of the debug experiment, each in its own run directory."""
    profile = load_profile("local-slurm", [f"checkpoint_root={root}", "sbatch_extra={hold: true}"])
    return [plan_job(profile, EXPERIMENT, overrides=[f"train.max_steps={10 + i}"], run_dir=root / tag / f"cell{i}")
            for i in range(N)]


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
        array_plans, single_plans = plans(root, f"array{rnd}"), plans(root, f"single{rnd}")
        sub, t_array = timed(lambda: submit_plans(array_plans, run_preflight=False))
        singles, t_single = timed(lambda: [submit_plans([p], run_preflight=False)["jobs"][0]["job_id"]
                                           for p in single_plans])
        _, t_pre1 = timed(lambda: submit_plans(plans(root, f"pre{rnd}")[:1], run_preflight=True))
        array_ids = sorted({job["job_id"].split("_")[0] for job in sub["jobs"]})
        subprocess.run(["scancel", *array_ids, *singles], env=env)
        subprocess.run(["scancel", "--name", "cell0"], env=env)
        print(f"round {rnd}: array of {N} {t_array:.2f}s, {N} single jobs {t_single:.2f}s, "
              f"ratio {t_single / t_array:.1f}x, one job with preflight {t_pre1:.2f}s", flush=True)
    print(f"planning: {plan_s / N * 1000:.1f} ms per job (plan_job, {N} jobs)")


if __name__ == "__main__":
    main()
