"""Cluster profiles: one YAML file per node type in ``cluster_profiles/``, in user terms (GPUs, memory per GPU, hours).

    python launch/submit.py --profile v100x8 --dry-run          # how a profile turns into a job
    python launch/submit.py --list-profiles

A profile names the hardware of one node type and where things live on that cluster::

    extends: v100x8              # start from another profile (a name or a path), then change some keys
    gpu_type: V100               # null for CPU-only nodes
    gpus_per_node: 4
    cpus_per_gpu: 5
    mem_per_gpu_gb: 48
    time_limit: 24h              # 90m, 24h, 2d, 1d12h, HH:MM:SS or D-HH:MM:SS
    precision: fp16
    checkpoint_root: ${CHECKPOINT_ROOT:-~/memorymodels/runs}
    exclusive: true              # whole nodes: --exclusive --mem=0
    srun_args: [--mpi=pmix]      # added to the job's srun line
    wckey: null                  # a --wckey only where the cluster wants one (submitit would write 'submitit')
    container:                   # run in an image: pyxis/enroot (srun --container-image) or apptainer exec
      image: nvcr.io#nvidia/pytorch:24.05-py3
      runtime: pyxis
      mounts: [/scratch:/scratch]
    group: mylab                 # who besides you reads run directories and code snapshots (null: nobody)
    snapshot_max_file_mb: 10     # larger files of the checkout are refused by name ...
    snapshot_include: [.env.public]   # ... as are credentials (.env, keys, .netrc), unless listed here

Values may use ``$VAR``, ``${VAR}``, ``${VAR:-default}`` and ``~``; they are expanded when a job is planned
(:func:`expand_path`), so a variable that is not set is an error naming the file and the key. ``--set
profile.KEY=VALUE`` on the command line changes a key before validation (``load_profile(name, overrides)``).
Validation errors name the file and the key: ``cluster_profiles/v100x8.yaml: 'precision: bf16' is not supported by
V100 GPUs; use fp16``.
"""

from __future__ import annotations

import dataclasses
import grp
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

from launch.planning.options import sbatch_extra_problem, srun_args_problem
from launch.slurm.output import parse_duration
from memorymodels.configuration import ConfigError, apply_overrides, closest, from_dict, load_yaml, to_dict
from memorymodels.experiment import REPO_ROOT
from memorymodels.precision import Device, resolve_precision

PROFILE_DIR = REPO_ROOT / "cluster_profiles"

# GPU types a profile may name: the largest node size sold, and the CUDA compute capability, which decides the
# precisions the GPU trains in (memorymodels.precision: bf16 from 8.0).
GPU_TYPES = {
    "V100": {"max_per_node": 16, "capability": (7, 0)},  # DGX-2 has 16
    "A100": {"max_per_node": 16, "capability": (8, 0)},
    "H100": {"max_per_node": 8, "capability": (9, 0)},
    "H200": {"max_per_node": 8, "capability": (9, 0)},
    "A10": {"max_per_node": 8, "capability": (8, 6)},
    "L40S": {"max_per_node": 8, "capability": (8, 9)},
}
LAUNCHERS = ("torchrun", "fsdp", "deepspeed")
CONTAINER_RUNTIMES = ("pyxis", "apptainer", "singularity")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SLURM_OPTION = re.compile(r"[a-z][a-z0-9-]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_GROUP = re.compile(r"[A-Za-z_][A-Za-z0-9._-]*")


def _check_text(src: str, key: str, value: Any) -> None:
    """Refuse control characters (a newline in an sbatch option would end the #SBATCH block and run the rest as
    shell in the job)."""
    if isinstance(value, str) and _CONTROL.search(value):
        raise ConfigError(f"{src}: '{key}' contains a control character ({value!r}); profile values are one line")


def _check_scalar(src: str, key: str, value: Any, what: str) -> None:
    """A value that becomes one word of the job (an sbatch option's value, an environment variable): a string or
    a finite number (``what`` says which), one line."""
    if not isinstance(value, (str, int, float, bool)) or isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{src}: '{key}' must be {what}, got {value!r}")
    _check_text(src, key, str(value))


@dataclass(kw_only=True)
class Container:
    """A profile's ``container:``: the image every node runs the job in (checked by ``Profile``, which names the file)."""

    image: str = ""
    """pyxis/enroot: an image name (nvcr.io#nvidia/pytorch:24.05-py3) or a .sqsh file; apptainer: a .sif file."""
    runtime: Literal["pyxis", "apptainer", "singularity"] = "pyxis"
    """pyxis: srun --container-image (the whole task runs in the image); apptainer/singularity: the launch command
    runs under ``apptainer exec --nv``."""
    mounts: list[str] = field(default_factory=list)
    """Host folders seen in the container, SRC:DST[:FLAGS]; the checkpoint and data roots are always added (same
    path inside, so the planned paths hold)."""
    workdir: str | None = None
    """Working directory inside the container (default: the job's code snapshot, or the project)."""
    python: str = "python"
    """The image's interpreter: it runs the trainer (and, under pyxis, the job's submitit task, so the image needs
    submitit)."""


@dataclass(kw_only=True)
class Profile:
    """One node type of one cluster, in user terms; ``launch.planning.plan`` turns it into scheduler parameters."""

    name: str = ""
    """The profile's name (its file's stem; set by ``load_profile``, not a key of the file)."""
    source: str = "<profile>"
    """The file this profile was read from, named in errors (set by ``load_profile``)."""
    description: str = ""
    """One line shown by ``--list-profiles``."""
    executor: Literal["slurm", "local"] = "slurm"
    """slurm: submit with sbatch; local: run on this machine with submitit's local executor (no Slurm)."""
    gpu_type: str | None = None
    """GPU model (V100, A100, H100, ...); null for CPU-only nodes (training uses gloo)."""
    gpus_per_node: int = 0
    """GPUs the job asks for on each node (0 on CPU-only nodes)."""
    processes_per_node: int | None = None
    """Training processes per node; default: one per GPU. Required on CPU-only nodes."""
    nodes: int = 1
    """Nodes per job unless ``--nodes`` says otherwise."""
    cpus_per_gpu: int = 4
    """CPU cores per GPU (per training process on CPU-only nodes)."""
    mem_per_gpu_gb: float = 16
    """Host memory in GB per GPU (per training process on CPU-only nodes)."""
    time_limit: str = "24h"
    """Wall-clock limit of one attempt: 90m, 24h, 2d, 1d12h, HH:MM:SS or D-HH:MM:SS. Requeued attempts get it again."""
    signal_before_end_s: int = 120
    """Seconds before the time limit at which the job is told to checkpoint (sbatch --signal)."""
    partition: str | None = None
    """Slurm partition (null: the cluster's default)."""
    account: str | None = None
    """Slurm account to charge (null: the user's default)."""
    qos: str | None = None
    """Slurm quality of service (null: the default)."""
    constraint: str | None = None
    """Slurm node feature constraint, e.g. v100-32g (null: none)."""
    precision: Literal["fp16", "bf16", "fp32"] = "fp32"
    """Mixed precision of training: fp16 on V100, bf16 on A100/H100, fp32 on CPU (``memorymodels.precision``
    refuses what the GPU cannot do)."""
    launcher: Literal["torchrun", "fsdp", "deepspeed"] = "torchrun"
    """Default launcher: torchrun (DDP), fsdp (accelerate + FSDP) or deepspeed (accelerate + ZeRO-3)."""
    data_root: str = ""
    """Where prepared tokenizers and token shards live on this cluster (the seed's DATA_ROOT): a ``data.corpus`` is
    prepared here once and shared by every job and code snapshot (the experiment's ``data.cache_dir``), and relative
    ``data.tokenizer`` / ``data.train_dir`` / ``data.test_dir`` are taken under it. Must be shared by all nodes."""
    checkpoint_root: str = ""
    """Where run directories are created on this cluster (the seed's CHECKPOINT_ROOT); must be shared by all nodes."""
    setup: list[str] = field(default_factory=list)
    """Shell lines run in the job before the launch (module load ..., source .venv/bin/activate)."""
    sbatch_extra: dict[str, Any] = field(default_factory=dict)
    """Escape hatch: further sbatch options, e.g. {mail-type: END, exclude: gpu-node-13}. Options the launcher sets
    or a profile key decides (partition, comment, chdir, output, ... in any spelling) are refused, naming the key to
    use (``launch.planning.options``)."""
    array_parallelism: int = 64
    """How many tasks of one sweep array may run at once."""
    max_array_size: int = 1001
    """Largest array this cluster accepts (Slurm's MaxArraySize, default 1001); bigger sweeps are split."""
    ask_above_cells: int = 1000
    """A sweep of more cells than this asks before it is planned and submitted (at a terminal; elsewhere it needs
    ``--yes``): a typo in a grid can make a hundred thousand jobs."""
    container: Container | None = None
    """Run the job in an image (pyxis/enroot or Apptainer); null: on the nodes' own software."""
    exclusive: bool = False
    """Whole nodes: ``--exclusive`` and ``--mem=0`` (all of each node's memory) instead of the per-GPU share."""
    srun_args: list[str] = field(default_factory=list)
    """Further arguments of the job's srun line, e.g. [--mpi=pmix, --cpu-bind=cores]; not the ones the launcher sets
    (--output, --error, --cpus-per-task, ... in any spelling)."""
    wckey: str | None = None
    """Slurm workload characterization key (--wckey); null: none (submitit would otherwise write --wckey=submitit,
    which clusters that enforce wckeys refuse)."""
    tag_field: Literal["comment", "wckey"] = "comment"
    """Which sbatch option carries the exactly-once tag every queued job has (``squeue`` prints it: %k, %w):
    ``comment`` by default; ``wckey`` where the site keeps --comment for accounting (``sbatch_extra: {comment: ...}``
    is then allowed; the cluster must accept any wckey, and the profile's ``wckey`` stays null)."""
    hang_timeout_s: int | None = None
    """Seconds a training process may go without a heartbeat before its attempt is ended as hung, its stacks
    written to RUN_DIR/launch/hangs/ and the run requeued. null: derived in the job from the slowest step, checkpoint
    and evaluation seen (x10), at least 300 s. Setup (data preparation, first rendezvous) gets at least 30 min."""
    max_failure_retries: int = 2
    """Retries of a run whose attempt died (a killed or crashed rank, a hang) while attempts keep failing at the
    same checkpoint; a retry that gets past it starts the count again. 0: a failure ends the job."""
    collective_timeout_s: int = 600
    """Seconds any collective (all-reduce, barrier) may wait before the ranks fail (transformers' ddp_timeout)."""
    env: dict[str, Any] = field(default_factory=dict)
    """Environment variables of the training processes, e.g. {NCCL_DEBUG: INFO, NCCL_SOCKET_IFNAME: ib0}; GPU
    profiles get NCCL_DEBUG=WARN and TORCH_NCCL_ASYNC_ERROR_HANDLING=3 unless they set them."""
    slurm_conf: str | None = None
    """The cluster's slurm.conf (null: SLURM_CONF as set, else Slurm's default); the local profiles name the
    project's development cluster here. Variables and ``~`` are expanded; relative paths are under the project."""
    snapshot_max_file_mb: float = 10
    """Largest file (MB) the code snapshot copies: a bigger one (data left in the checkout?) is refused by name unless
    ``snapshot_include`` lists it; raise it for large files that are code."""
    snapshot_include: list[str] = field(default_factory=list)
    """Files of the checkout the snapshot copies although they look like credentials (.env, keys, .netrc) or exceed
    ``snapshot_max_file_mb``: paths relative to the checkout, shell wildcards allowed (``*`` also crosses folders)."""
    group: str | None = None
    """Unix group whose members may read this profile's run directories and code snapshots (and add their own
    snapshots beside yours); null: only you. You must belong to it on the machine you submit from."""
    extends: str | None = None
    """Profile this one starts from (resolved by ``load_profile``; kept to show where values came from)."""

    def __post_init__(self):
        src = self.source
        if self.gpu_type is not None:
            if self.gpu_type not in GPU_TYPES:
                raise ConfigError(f"{src}: 'gpu_type: {self.gpu_type}' is not a known GPU; "
                                  f"use one of {', '.join(GPU_TYPES)} (or null for CPU-only nodes)")
            limit = GPU_TYPES[self.gpu_type]["max_per_node"]
            if not 1 <= self.gpus_per_node <= limit:
                raise ConfigError(f"{src}: 'gpus_per_node: {self.gpus_per_node}' is impossible for {self.gpu_type} "
                                  f"nodes; use 1 to {limit}")
            if self.processes_per_node is not None and self.processes_per_node != self.gpus_per_node:
                raise ConfigError(f"{src}: 'processes_per_node: {self.processes_per_node}' must equal "
                                  f"'gpus_per_node: {self.gpus_per_node}' on GPU nodes (one process per GPU); "
                                  f"remove processes_per_node")
        else:
            if self.gpus_per_node != 0:
                raise ConfigError(f"{src}: 'gpus_per_node: {self.gpus_per_node}' needs 'gpu_type' "
                                  f"(V100, A100, H100, ...); set gpu_type, or gpus_per_node: 0 for CPU-only nodes")
            if self.processes_per_node is None or self.processes_per_node < 1:
                raise ConfigError(f"{src}: 'processes_per_node' must be 1 or more on CPU-only nodes "
                                  f"(gpu_type: null), got {self.processes_per_node}")
            if self.launcher != "torchrun":
                raise ConfigError(f"{src}: 'launcher: {self.launcher}' needs GPUs (accelerate's FSDP and DeepSpeed "
                                  f"stop with 'no available devices' on CPU); use launcher: torchrun")
        try:
            resolve_precision(self.precision, self.device, key="precision")
        except ConfigError as exc:
            raise ConfigError(f"{src}: {exc}") from None
        if self.nodes < 1:
            raise ConfigError(f"{src}: 'nodes: {self.nodes}' must be 1 or more")
        if self.executor == "local" and self.nodes != 1:
            raise ConfigError(f"{src}: 'nodes: {self.nodes}' is impossible with 'executor: local' (this machine); "
                              f"use nodes: 1")
        for key in ("cpus_per_gpu", "array_parallelism", "max_array_size", "ask_above_cells"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{src}: '{key}: {getattr(self, key)}' must be 1 or more")
        if self.mem_per_gpu_gb <= 0:
            raise ConfigError(f"{src}: 'mem_per_gpu_gb: {self.mem_per_gpu_gb}' must be positive")
        if self.signal_before_end_s < 0:
            raise ConfigError(f"{src}: 'signal_before_end_s' must be 0 or more, got {self.signal_before_end_s}")
        for key in ("data_root", "checkpoint_root"):
            if not str(getattr(self, key)).strip():
                raise ConfigError(f"{src}: '{key}' is missing; set it to this cluster's path "
                                  f"(environment variables allowed, e.g. {key}: ${{{key.upper()}:-~/memorymodels}})")
        minutes = parse_time_limit(self.time_limit, where=f"{src}: 'time_limit'")
        if self.signal_before_end_s >= minutes * 60:
            raise ConfigError(f"{src}: 'signal_before_end_s: {self.signal_before_end_s}' is not shorter than "
                              f"'time_limit: {self.time_limit}'; the job would be told to stop before it starts")
        if not isinstance(self.setup, list) or not all(isinstance(line, str) for line in self.setup):
            raise ConfigError(f"{src}: 'setup' must be a list of shell lines")
        self._check_site()
        self._check_failure_keys(src)
        self._check_sharing(src)
        self._check_text_values()

    def _check_text_values(self) -> None:
        """What ends up in the sbatch script as text: one line each, Slurm names without spaces, sbatch_extra keys
        that look like sbatch long options (a newline there would end the #SBATCH block and run the rest)."""
        src = self.source
        for f in dataclasses.fields(self):
            if f.name not in ("source", "setup", "sbatch_extra", "env"):
                _check_text(src, f.name, getattr(self, f.name))
        for key in ("partition", "account", "qos", "constraint", "wckey"):
            value = getattr(self, key)
            if value is not None and (not value.strip() or any(ch.isspace() for ch in value)):
                raise ConfigError(f"{src}: '{key}: {value}' is not a Slurm name (no spaces; null for the default)")
        for i, line in enumerate(self.setup):
            _check_text(src, f"setup[{i}]", line)
        for key, value in self.sbatch_extra.items():
            if not isinstance(key, str) or not _SLURM_OPTION.fullmatch(key):
                raise ConfigError(f"{src}: 'sbatch_extra' key {key!r} is not an sbatch long option (lower-case "
                                  f"letters, digits and '-', e.g. mail-type)")
            _check_scalar(src, f"sbatch_extra.{key}", value, "one string, number or true")
            if why := sbatch_extra_problem(key, self.tag_field):
                raise ConfigError(f"{src}: 'sbatch_extra.{key}' {why}")

    def _check_site(self) -> None:
        """``container``, ``srun_args`` (``exclusive`` and ``wckey`` are checked with the other keys)."""
        src = self.source
        if not isinstance(self.srun_args, list) or not all(isinstance(a, str) and a.strip() for a in self.srun_args):
            raise ConfigError(f"{src}: 'srun_args' must be a list of srun arguments (strings), got {self.srun_args!r}")
        for i, arg in enumerate(self.srun_args):
            _check_text(src, f"srun_args[{i}]", arg)
        if problem := srun_args_problem(self.srun_args):
            i, why = problem
            raise ConfigError(f"{src}: 'srun_args[{i}]: {self.srun_args[i]}' {why}")
        if self.tag_field == "wckey" and self.wckey is not None:
            raise ConfigError(f"{src}: 'tag_field: wckey' puts the launcher's exactly-once tag in --wckey, which "
                              f"'wckey: {self.wckey}' sets too; set wckey: null, or tag_field: comment")
        box = self.container
        if box is None:
            return
        for key in ("image", "python", "workdir", "runtime"):
            _check_text(src, f"container.{key}", getattr(box, key))
        if not box.image.strip() or any(ch.isspace() for ch in box.image):
            raise ConfigError(f"{src}: 'container.image' must name one image (no spaces), got {box.image!r}")
        if not box.python.strip():
            raise ConfigError(f"{src}: 'container.python' must name the image's interpreter, got {box.python!r}")
        for i, mount in enumerate(box.mounts):
            _check_text(src, f"container.mounts[{i}]", mount)
            if not mount.strip() or "," in mount or any(ch.isspace() for ch in mount):
                raise ConfigError(f"{src}: 'container.mounts[{i}]: {mount}' is not one SRC[:DST[:FLAGS]] mount "
                                  f"(no commas or spaces; one list item per mount)")
        if box.workdir is not None and not box.workdir.startswith("/"):
            raise ConfigError(f"{src}: 'container.workdir: {box.workdir}' must be an absolute path inside the image")

    def _check_failure_keys(self, src: str) -> None:
        """hang_timeout_s, max_failure_retries, collective_timeout_s and env."""
        if self.hang_timeout_s is not None and self.hang_timeout_s < 10:
            raise ConfigError(f"{src}: 'hang_timeout_s: {self.hang_timeout_s}' must be 10 or more (null: derived "
                              f"from the step and checkpoint times seen)")
        if self.max_failure_retries < 0:
            raise ConfigError(f"{src}: 'max_failure_retries' must be 0 or more, got {self.max_failure_retries}")
        if self.collective_timeout_s < 10:
            raise ConfigError(f"{src}: 'collective_timeout_s: {self.collective_timeout_s}' must be 10 or more")
        if not isinstance(self.env, dict):
            raise ConfigError(f"{src}: 'env' must be a mapping of variable names to values, e.g. "
                              f"{{NCCL_DEBUG: WARN}}")
        for name, value in self.env.items():
            if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
                raise ConfigError(f"{src}: 'env' key {name!r} is not an environment variable name (letters, digits "
                                  f"and '_', not starting with a digit)")
            _check_scalar(src, f"env.{name}", value, "one string or number")

    def _check_sharing(self, src: str) -> None:
        """snapshot_max_file_mb, snapshot_include and group (who can read what the jobs write)."""
        if not self.snapshot_max_file_mb > 0:
            raise ConfigError(f"{src}: 'snapshot_max_file_mb: {self.snapshot_max_file_mb:g}' must be positive")
        if not isinstance(self.snapshot_include, list) or not all(
                isinstance(item, str) and item.strip() for item in self.snapshot_include):
            raise ConfigError(f"{src}: 'snapshot_include' must be a list of paths relative to the checkout, got "
                              f"{self.snapshot_include!r}")
        for i, item in enumerate(self.snapshot_include):
            _check_text(src, f"snapshot_include[{i}]", item)
            if item.startswith(("/", "~")) or ".." in Path(item).parts:
                raise ConfigError(f"{src}: 'snapshot_include[{i}]: {item}' must be a path inside the checkout "
                                  f"(relative to it, no '..' or '~')")
        if self.group is not None and not _GROUP.fullmatch(self.group):
            raise ConfigError(f"{src}: 'group: {self.group}' is not a Unix group name (letters, digits, '.', '_' "
                              f"and '-'); null: only you")

    def gid(self) -> int | None:
        """The id of ``group`` on this machine (None without one); a ConfigError naming the file and key when there
        is no such group or you are not in it (a folder cannot be given to a group you do not belong to)."""
        if self.group is None:
            return None
        try:
            gid = grp.getgrnam(self.group).gr_gid
        except KeyError:
            raise ConfigError(f"{self.source}: 'group: {self.group}' is not a group on this machine (getent group "
                              f"{self.group}); name one you belong to (id -Gn), or null to keep your runs to "
                              f"yourself") from None
        if gid not in (os.getegid(), *os.getgroups()) and os.geteuid() != 0:
            raise ConfigError(f"{self.source}: 'group: {self.group}': you are not a member of it (id -Gn lists your "
                              f"groups); name one of them, or null to keep your runs to yourself")
        return gid

    @property
    def procs_per_node(self) -> int:
        """Training processes (GPU workers) per node."""
        return self.processes_per_node if self.processes_per_node is not None else self.gpus_per_node

    @property
    def time_minutes(self) -> int:
        """``time_limit`` in whole minutes (what Slurm's ``--time`` takes)."""
        return parse_time_limit(self.time_limit, where=f"{self.source}: 'time_limit'")

    @property
    def device(self) -> Device:
        """The device every training process gets, as the precision rule (``memorymodels.precision``) sees it."""
        if self.gpu_type is None:
            return Device("cpu")
        return Device("gpu", capability=GPU_TYPES[self.gpu_type]["capability"], name=self.gpu_type)

    @property
    def backend(self) -> str:
        """torch.distributed backend the workers use: nccl on GPUs, gloo on CPU-only nodes."""
        return "nccl" if self.gpu_type else "gloo"

    def slurm_conf_path(self) -> Path | None:
        """``slurm_conf`` expanded (variables, ``~``, relative to the project), or None."""
        if not self.slurm_conf:
            return None
        return expand_path(self.slurm_conf, where=f"{self.source}: 'slurm_conf'")

    def as_dict(self) -> dict:
        """The resolved profile as plain data (what run dirs and ``--dry-run`` record)."""
        data = to_dict(self)
        data.pop("source")
        return data


_TIME_UNITS = re.compile(r"(\d+(?:\.\d+)?)([dhms])")


def parse_time_limit(text: Any, *, where: str = "time_limit") -> int:
    """``'24h'`` -> 1440 minutes. Accepts 90m, 24h, 2d, 1d12h, 45s (rounded up), and Slurm's own forms (a bare
    number of minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS; parsed by ``launch.slurm.output``)."""
    value = str(text).strip().lower()
    seconds = parse_duration(value) if value[:1].isdigit() and not _TIME_UNITS.search(value) else None
    if seconds is None and value and _TIME_UNITS.sub("", value) == "":
        scale = {"d": 86400, "h": 3600, "m": 60, "s": 1}
        seconds = sum(float(n) * scale[u] for n, u in _TIME_UNITS.findall(value))
    if seconds is None or seconds <= 0:
        raise ConfigError(f"{where}: '{text}' is not a time limit; write e.g. 90m, 24h, 2d, 1d12h or 23:59:00")
    return max(1, int(-(-seconds // 60)))


def format_minutes(minutes: int) -> str:
    """1500 -> '1-01:00:00' (Slurm's D-HH:MM:SS)."""
    days, rest = divmod(int(minutes), 1440)
    return (f"{days}-" if days else "") + f"{rest // 60:02d}:{rest % 60:02d}:00"


_VAR = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")


def expand_path(value: str, *, where: str, environ: dict | None = None, base: Path | None = None) -> Path:
    """Expand ``$VAR``, ``${VAR}``, ``${VAR:-default}`` and ``~`` in a profile path; relative paths are taken
    relative to ``base`` (the project root by default). An unset variable without a default is a ConfigError
    naming ``where`` (file and key)."""
    env = os.environ if environ is None else environ

    def substitute(match: re.Match) -> str:
        name = match.group("braced") or match.group("bare")
        if name in env and env[name] != "":
            return env[name]
        if match.group("default") is not None:
            return os.path.expanduser(match.group("default"))
        raise ConfigError(f"{where} uses ${name}, which is not set in this shell; export {name}=... "
                          f"or write a default: ${{{name}:-/some/path}}")

    expanded = os.path.expanduser(_VAR.sub(substitute, value))
    path = Path(expanded)
    return path if path.is_absolute() else (base or REPO_ROOT) / path


def profile_path(name_or_path: str | Path) -> Path:
    """The file of a profile given by name (``v100x8``) or path; an unknown name lists the valid ones."""
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or os.sep in text:
        path = Path(text)
        if not path.is_file():
            raise ConfigError(f"{text}: no such profile file; valid profiles: {', '.join(list_profiles())}")
        return path
    path = PROFILE_DIR / f"{text}.yaml"
    if not path.is_file():
        guess = closest(text, list_profiles())
        hint = f"; did you mean '{guess}'?" if guess else ""
        raise ConfigError(f"unknown profile '{text}'{hint} valid profiles: {', '.join(list_profiles())} "
                          f"(files in {PROFILE_DIR}; or pass a path to a .yaml file)")
    return path


def list_profiles() -> list[str]:
    """Names of the shipped profiles (``cluster_profiles/*.yaml``)."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml") if not p.stem.startswith("_"))


def _resolved_data(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """The profile file's keys merged over those of the profile it ``extends`` (recursively)."""
    if path.resolve() in seen:
        chain = " -> ".join(str(p) for p in (*seen, path.resolve()))
        raise ConfigError(f"{path}: 'extends' forms a loop: {chain}")
    data = load_yaml(path)
    parent = data.get("extends")
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: 'extends' must name a profile, got {parent!r}")
    parent_path = (path.parent / parent) if parent.endswith((".yaml", ".yml")) else None
    if parent_path is None or not parent_path.is_file():
        try:
            parent_path = profile_path(parent)
        except ConfigError as exc:
            raise ConfigError(f"{path}: 'extends: {parent}': {exc}") from None
    merged = _resolved_data(parent_path, (*seen, path.resolve()))
    merged = {k: v for k, v in merged.items() if k not in ("extends", "description")}
    merged.update(data)
    return merged


def load_profile(name_or_path: str | Path, overrides: Iterable[str | tuple[str, Any]] = ()) -> Profile:
    """Read a profile by name or path, resolve ``extends``, apply ``--set`` style overrides (keys without the
    ``profile.`` prefix, e.g. ``time_limit=2h``) and validate it. Errors name the file and the key."""
    path = profile_path(name_or_path)
    overrides = list(overrides)
    data = apply_overrides(_resolved_data(path), overrides)
    for key in ("name", "source"):
        if key in data:
            raise ConfigError(f"{path}: '{key}' is set from the file name, not a key of the file; remove it")
    items = [f"profile.{o}" if isinstance(o, str) else f"profile.{o[0]}={o[1]}" for o in overrides]
    source = str(_display(path)) + (f" (with --set {' '.join(items)})" if items else "")
    try:
        return from_dict(Profile, {**data, "name": path.stem, "source": source}, source=source)
    except ConfigError as exc:
        message = str(exc)
        raise ConfigError(message if message.startswith(source) else f"{source}: {message}") from None


def _display(path: Path) -> Path:
    """``path`` relative to the project root when it is inside it (shorter messages)."""
    try:
        return path.resolve().relative_to(REPO_ROOT)
    except ValueError:
        return path


def replace(profile: Profile, **changes) -> Profile:
    """A validated copy with some fields changed (``--nodes``, ``--launcher``)."""
    return dataclasses.replace(profile, **changes)
