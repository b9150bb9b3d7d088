"""What each node of a planned job runs, and the job's Slurm parameters: the pure pieces ``plan_job`` assembles.

    python launch/submit.py --profile a100x8 --launcher fsdp --nodes 2 --dry-run     # shows all of them

The files the launcher keeps in ``RUN_DIR/launch/`` (named by ``memorymodels.rundir``), the sbatch parameters in submitit's names
(with the job's ``--comment`` tag, ``srun --kill-on-bad-exit`` and the profile's site settings), the setup lines that
stop the job at the first failure, the accelerate config filled in from ``configs/``, the training processes'
environment, and the launch command: an optional code-snapshot and container prefix, then torchrun or ``accelerate
launch`` of the trainer, or the trainer alone for one process. Every function is pure.
"""

from __future__ import annotations

import functools
import hashlib
import shlex
from pathlib import Path
from typing import Any, Iterable

import yaml

from launch.planning.code import NO_WRITES
from launch.planning.profiles import Profile
from memorymodels.experiment import REPO_ROOT
from memorymodels.rundir import RunPaths

TEMPLATES = {"fsdp": REPO_ROOT / "configs" / "fsdp_config.yaml", "deepspeed": REPO_ROOT / "configs" / "zero_config.yaml"}


GPU_ENV = {"NCCL_DEBUG": "WARN", "TORCH_NCCL_ASYNC_ERROR_HANDLING": "3", "TORCH_NCCL_DUMP_ON_TIMEOUT": "1"}
"""What GPU jobs get unless the profile's ``env`` says otherwise: NCCL warnings in the log, a failed collective
tears the process down (so the launcher sees the failure instead of a hang), and the flight recorder's dump on a
collective timeout."""


TAG_PREFIX = "memorymodels:"
"""Every job the launcher queues carries a tag in Slurm's ``--comment`` (what ``squeue -o %k`` shows): a run's
``memorymodels:run:<hash of its directory>``, an array's ``memorymodels:sweep:<submission id>:<array>``. A rerun
finds in the queue what an earlier, interrupted submission queued, journaled or not."""


def run_tag(run_dir: str | Path) -> str:
    """The ``--comment`` tag of a single job training in ``run_dir``."""
    return f"{TAG_PREFIX}run:{hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]}"


def array_tag(submission_id: str, k: int) -> str:
    """The ``--comment`` tag of array ``k`` of a sweep submission."""
    return f"{TAG_PREFIX}sweep:{submission_id}:{k}"


def sbatch_parameters(profile: Profile, *, name: str, nodes: int, dependency: str | None = None,
                      comment: str | None = None, code_dir: Path | None = None,
                      mounts: Iterable[Path] = ()) -> dict[str, Any]:
    """The profile in scheduler terms (submitit's parameter names); ``dependency`` a resolved spec; ``comment``
    the job's tag (:func:`run_tag`); ``code_dir`` the code snapshot the job runs from (``--chdir``); ``mounts``
    folders a container must see at the same path (the checkpoint and data roots). Pure."""
    procs = profile.procs_per_node
    mem_gb = profile.mem_per_gpu_gb * procs
    params: dict[str, Any] = {"job_name": name}
    if comment:
        params["comment"] = comment
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(profile, key):
            params[key] = getattr(profile, key)
    params.update({"nodes": nodes, "ntasks_per_node": 1})
    if profile.gpus_per_node:
        params["gpus_per_node"] = profile.gpus_per_node
    params.update({"cpus_per_task": profile.cpus_per_gpu * procs,
                   "mem": f"{int(mem_gb)}G" if mem_gb == int(mem_gb) else f"{int(mem_gb * 1024)}M",  # Slurm 22.05 rejects "GB"
                   "time": profile.time_minutes,
                   "signal_delay_s": profile.signal_before_end_s,
                   "additional_parameters": {"requeue": True, **({"chdir": str(code_dir)} if code_dir else {}),
                                             **profile.sbatch_extra,
                                             **({"dependency": dependency} if dependency else {})},
                   # srun does not inherit --cpus-per-task from sbatch in Slurm 22.05-23.02: without this the step, so
                   # torchrun and all its workers, may be bound to one core
                   "srun_args": ["--cpus-per-task", str(profile.cpus_per_gpu * procs), *KILL_ON_BAD_EXIT,
                                 *profile.srun_args,
                                 *pyxis_args(profile, code_dir, mounts)],
                   "wckey": profile.wckey})  # None: no --wckey line (submitit's default is 'submitit')
    if profile.exclusive:  # whole nodes, all their memory
        params.update(exclusive=True, mem="0")
    # submitit's task imports the launcher from the snapshot (--chdir): it writes no bytecode there either
    setup = [f"export {name}={shlex.quote(value)}" for name, value in NO_WRITES.items()] if code_dir else []
    if setup or profile.setup:
        params["setup"] = setup + setup_lines(profile.setup)
    return params


def container_mounts(profile: Profile, mounts: Iterable[Path]) -> list[str]:
    """The container's mounts: the profile's, then ``mounts`` (the checkpoint and data roots) at the same path."""
    extra = [f"{path}:{path}" for path in dict.fromkeys(str(m) for m in mounts)]
    return list(dict.fromkeys([*profile.container.mounts, *extra]))


def pyxis_args(profile: Profile, code_dir: Path | None, mounts: Iterable[Path]) -> list[str]:
    """srun's pyxis flags for a ``runtime: pyxis`` container (the job's task runs in the image), else []."""
    box = profile.container
    if box is None or box.runtime != "pyxis":
        return []
    workdir = box.workdir or (str(code_dir) if code_dir else None)
    return [f"--container-image={box.image}", f"--container-mounts={','.join(container_mounts(profile, mounts))}",
            *([f"--container-workdir={workdir}"] if workdir else [])]


KILL_ON_BAD_EXIT = ["--kill-on-bad-exit=1"]
"""One node's task exiting non-zero ends the step on every node: nothing waits in a collective for a dead peer.
The node tasks exit 0 on every path that requeues (``launch.node.task``), so only a real failure trips it. Not
``--wait``: rank 0 still evaluates after the other nodes' tasks have finished."""


def setup_lines(lines: list[str]) -> list[str]:
    """The profile's ``setup`` lines as the script runs them: each followed by a check that ends the job at the
    first failing line, naming it (``set -e`` semantics for these lines only; submitit's own lines are left as
    they are). Pure."""
    result = []
    for i, line in enumerate(lines, 1):
        result += [line, f"mm_status=$?; if [ $mm_status -ne 0 ]; then printf 'memorymodels: setup line {i} of "
                         f"{len(lines)} failed (exit %s): %s\\n' $mm_status {shlex.quote(line)} >&2; "
                         f"exit $mm_status; fi"]
    return result


@functools.lru_cache(maxsize=4)
def _template(launcher: str) -> str:
    return TEMPLATES[launcher].read_text()


def accelerate_config(profile: Profile, precision: str) -> str:
    """The accelerate YAML for ``fsdp``/``deepspeed``: the template with the profile's values filled in. Pure."""
    template = TEMPLATES[profile.launcher]
    data = yaml.safe_load(_template(profile.launcher))
    nodes = profile.nodes
    data.update({"num_processes": nodes * profile.procs_per_node, "num_machines": nodes, "machine_rank": 0,
                 "mixed_precision": "no" if precision == "fp32" else precision})
    data.pop("use_cpu", None)  # the seed's zero_config.yaml asked for CPU by mistake
    header = (f"# Generated by launch/submit.py from {template.relative_to(REPO_ROOT)} for profile {profile.name}:\n"
              f"# num_processes = {nodes} node(s) x {profile.procs_per_node} GPU(s). Each node passes its own\n"
              f"# --machine_rank and the head node's --main_process_ip/--main_process_port (flags win over keys).\n")
    return header + yaml.safe_dump(data, sort_keys=True)


def job_env(profile: Profile) -> dict[str, str]:
    """The environment the training processes get on top of the job's: threads per process, unbuffered output,
    :data:`GPU_ENV` on GPU nodes, then the profile's ``env``. Pure."""
    env = {"OMP_NUM_THREADS": str(profile.cpus_per_gpu), "PYTHONUNBUFFERED": "1", **(GPU_ENV if profile.gpu_type else {})}
    env.update({name: str(value).lower() if isinstance(value, bool) else str(value)
                for name, value in profile.env.items()})
    return env


def launch_command(profile: Profile, precision: str, *, python: str, run_dir: Path, code_dir: Path | None = None,
                   mounts: Iterable[Path] = (), extend: bool = False) -> str:
    """One node's launch command (shell): the trainer reads the resolved experiment the submission wrote; from
    ``code_dir`` when given (working directory and PYTHONPATH), inside an apptainer/singularity container when the
    profile names one; ``extend``: the trainer continues the run to the longer schedule (``--extend``). Pure."""
    return command_prefix(profile, code_dir, mounts) + trainer_command(profile, precision, python=python,
                                                                        run_dir=run_dir, extend=extend)


def command_prefix(profile: Profile, code_dir: Path | None, mounts: Iterable[Path]) -> str:
    """``env --chdir=CODE PYTHONPATH=CODE PYTHONDONTWRITEBYTECODE=1 `` and ``apptainer exec --nv --bind ... IMAGE ``
    as the plan needs them (the command is exec'd by the node's shell, so a prefix that execs the rest keeps its
    process id)."""
    q = shlex.quote
    prefix = ""
    if code_dir:
        # the snapshot first on the path, then whatever PYTHONPATH the job already has (a profile's env: may add
        # one); nothing written into the snapshot (NO_WRITES)
        no_writes = "".join(f"{name}={q(value)} " for name, value in NO_WRITES.items())
        code = q(str(code_dir))
        prefix = f"env --chdir={code} PYTHONPATH={code}\"${{PYTHONPATH:+:$PYTHONPATH}}\" {no_writes}"
    box = profile.container
    if box is not None and box.runtime != "pyxis":
        workdir = box.workdir or (str(code_dir) if code_dir else None)
        prefix += " ".join([box.runtime, "exec", *(["--nv"] if profile.gpu_type else []),
                            "--bind", q(",".join(container_mounts(profile, mounts))),
                            *(["--pwd", q(workdir)] if workdir else []), q(box.image)]) + " "
    return prefix


def trainer_command(profile: Profile, precision: str, *, python: str, run_dir: Path, extend: bool = False) -> str:
    """torchrun or ``accelerate launch`` of the trainer (the image's interpreter in a container); for one process on
    one node under ``torchrun`` the trainer itself: torchrun would only start it, after importing torch and starting
    its agent (1.7 s of the debug job's startup, BENCHMARKS.md "Startup"), and the node task signals, watches and
    judges a trainer it started the same way (``launch.node.task``). Pure."""
    procs, nodes = profile.procs_per_node, profile.nodes
    q = shlex.quote
    if profile.container is not None:
        python = profile.container.python
    files = RunPaths(run_dir)
    train = ["-m", "memorymodels.train", "--experiment", str(files.experiment), "--run-dir", str(run_dir),
             "--heartbeat-dir", str(files.heartbeats), "--collective-timeout-s", str(profile.collective_timeout_s),
             *(["--extend"] if extend else [])]
    train_args = " ".join(q(a) for a in train)
    if profile.launcher == "torchrun" and nodes == 1 and procs == 1:
        return f"{q(python)} {train_args}"
    if profile.launcher == "torchrun":
        if nodes == 1:
            rdzv = f"--standalone --nnodes 1 --nproc_per_node {procs}"
        else:
            rdzv = (f"--nnodes {nodes} --nproc_per_node {procs} --rdzv_backend c10d "
                    f"--rdzv_endpoint \"$HEAD_NODE:$HEAD_PORT\" --rdzv_id \"$RDZV_ID\"")
        return f"{q(python)} -m torch.distributed.run {rdzv} --tee 3 {train_args}"
    mixed = "no" if precision == "fp32" else precision
    return (f"{q(python)} -m accelerate.commands.launch --config_file {q(str(files.accelerate_config))} "
            f"--num_processes {nodes * procs} --num_machines {nodes} --machine_rank \"$NODE_RANK\" "
            f"--main_process_ip \"$HEAD_NODE\" --main_process_port \"$HEAD_PORT\" --mixed_precision {mixed} "
            f"{train_args}")
