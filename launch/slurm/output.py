"""What Slurm's ``squeue`` and ``sacct`` print, parsed for the dashboard; pure (no Slurm call here).

The commands (:func:`squeue_command`, :func:`sacct_command`) ask for fixed fields separated by ``SEP`` (``squeue``)
or ``|`` (``sacct -P``); the parsers turn their text into plain records and never raise: unknown states pass through
upper-cased, odd lines are skipped and counted, missing columns become ``None``. Tests replay output captured from
the real local cluster (``tests/launch/fixtures/``). ``launch.monitor.queue`` makes the calls and builds the rows.
"""

from __future__ import annotations

import functools
import re
import time

# squeue --Format fields, in order; the name goes last because it is the one free-text field. StartTime is a pending
# job's expected start (what ``squeue --start`` prints), so the start estimate costs no extra call. SubmitTime and
# Dependency came later: output without them (recorded earlier) still parses, with None for them.
SQUEUE_FIELDS = ("JobID", "ArrayJobID", "ArrayTaskID", "State", "Reason", "TimeUsed", "TimeLimit", "NodeList",
                 "RestartCnt", "StartTime", "EndTime", "SubmitTime", "Dependency", "Name")
SQUEUE_BEFORE_LATER = ("JobID", "ArrayJobID", "ArrayTaskID", "State", "Reason", "TimeUsed", "TimeLimit", "NodeList",
                       "RestartCnt", "StartTime", "EndTime", "Name")
_TIME_OR_NONE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d|N/A|Unknown|None|")
SACCT_FIELDS = ("JobID", "JobIDRaw", "State", "ExitCode", "Elapsed", "Timelimit", "NodeList", "Reason", "Submit",
                "Start", "End", "JobName")
SEP = "\x1f"  # unit separator: never in a job name or a state

COMPACT_STATES = {
    "PD": "PENDING", "R": "RUNNING", "CG": "COMPLETING", "CD": "COMPLETED", "F": "FAILED", "CA": "CANCELLED",
    "TO": "TIMEOUT", "OOM": "OUT_OF_MEMORY", "NF": "NODE_FAIL", "PR": "PREEMPTED", "S": "SUSPENDED",
    "RQ": "REQUEUED", "RH": "REQUEUE_HOLD", "RF": "REQUEUE_FED", "SE": "SPECIAL_EXIT", "CF": "CONFIGURING",
    "BF": "BOOT_FAIL", "DL": "DEADLINE", "ST": "STOPPED", "RS": "RESIZING", "RD": "RESV_DEL_HOLD",
    "SO": "STAGE_OUT", "SI": "SIGNALING", "RV": "REVOKED",
}
ACTIVE_STATES = {"PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD",
                 "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD"}
FAILED_STATES = {"FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"}
TERMINAL_STATES = FAILED_STATES | {"COMPLETED", "CANCELLED", "PREEMPTED", "REVOKED", "SPECIAL_EXIT"}

REASONS = {
    "None": "", "": "",
    "Priority": "waiting behind higher-priority jobs",
    "Resources": "waiting for free nodes/GPUs",
    "Dependency": "waiting for the job it depends on",
    "DependencyNeverSatisfied": "its dependency failed: it will never start (cancel it)",
    "BeginTime": "its start time (--begin) is not reached yet",
    "JobHeldUser": "held by you (scontrol release JOBID)",
    "JobHeldAdmin": "held by an administrator",
    "JobArrayTaskLimit": "the array's limit of tasks running at once is reached",
    "ReqNodeNotAvail": "a requested node is down, drained or reserved",
    "NodeDown": "a node it needs is down",
    "PartitionDown": "the partition is down",
    "PartitionInactive": "the partition is inactive",
    "PartitionNodeLimit": "asks for more nodes than the partition allows",
    "PartitionTimeLimit": "its time limit exceeds the partition's limit (resubmit with a shorter one)",
    "Reservation": "waiting for its reservation to start",
    "Licenses": "waiting for a license",
    "BadConstraints": "its constraints cannot be satisfied (check --constraint / GPU type)",
    "InvalidAccount": "its account is invalid", "InvalidQOS": "its QOS is invalid",
    "Cleaning": "being requeued: the previous run is still cleaning up",
    "Prolog": "the prolog is still running",
    "WaitingForScheduling": "not scheduled yet",
    "launch failed requeued held": "launch failed; requeued and held (check the node, then scontrol release)",
    "JobLaunchFailure": "the job could not be launched",
    "NonZeroExitCode": "exited with a non-zero code",
    "TimeLimit": "ran out of time", "SystemFailure": "Slurm, a file system or the network failed",
    "BurstBufferResources": "waiting for burst buffer space",
}


WAITING_REASONS = {"Priority", "Resources", "Dependency", "BeginTime", "JobHeldUser", "JobHeldAdmin",
                   "JobArrayTaskLimit", "ReqNodeNotAvail", "PartitionDown", "PartitionInactive", "Reservation",
                   "Licenses", "Cleaning", "Prolog", "WaitingForScheduling", "BurstBufferResources"}
"""Reasons that say why a job waits: history once it has ended (a job held, released and failed is not "held by
you"); with the QOS and account limits (``QOS...``, ``Assoc...``)."""


def waiting_reason(reason: str | None) -> bool:
    """Whether ``reason`` says why a job is waiting (:data:`WAITING_REASONS`), not why it stopped."""
    reason = (reason or "").strip().strip("()")
    return reason in WAITING_REASONS or reason.startswith(("QOS", "Assoc"))


def explain_reason(reason: str | None) -> str:
    """A Slurm pending/stop reason in plain words (``Priority`` -> 'waiting behind higher-priority jobs')."""
    reason = (reason or "").strip()
    if reason.startswith("(") and reason.endswith(")"):
        reason = reason[1:-1]
    if reason in REASONS:
        return REASONS[reason]
    for prefix, who in (("QOS", "the QOS's"), ("Assoc", "your account's")):
        if reason.startswith(prefix):
            limit = re.sub(r"^(QOS|Association|Assoc)(Grp|Max)?|Limit$", "", reason)
            words = re.sub(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", limit).lower()
            return f"{who} limit on {words or 'jobs'} is reached"
    return reason


DEPENDENCY_WORDS = {"afterok": "to complete", "afterany": "to end", "afternotok": "to fail", "after": "to start",
                    "aftercorr": "(the same task) to complete", "afterburstbuffer": "to stage out"}


def explain_dependency(dependency: str | None) -> str:
    """squeue's Dependency field in words, naming the jobs: ``afterok:142(unfulfilled)`` -> 'waiting for job 142 to
    complete'; a condition that can no longer hold (``(failed)``) says the job will never start."""
    text = (dependency or "").strip()
    if not text or text in ("(null)", "N/A"):
        return REASONS["Dependency"]
    parts, never = [], []
    for item in re.split(r"[,?]", text):
        match = re.fullmatch(r"(\w+):([\w+:\[\]*-]+?)(?:\((\w+)\))?", item.strip())
        if not match:
            if item.strip() == "singleton":
                parts.append("the other jobs of the same name and user to end")
            continue
        kind, jobs, status = match.groups()
        jobs = [job.split("+")[0].replace("_*", " (every task)") for job in jobs.split(":")]
        what = f"job{'s' if len(jobs) > 1 else ''} {', '.join(jobs)} {DEPENDENCY_WORDS.get(kind, f'({kind})')}"
        (never if status == "failed" else parts).append(what)
    if never:
        return f"its dependency cannot be met any more ({'; '.join(never)}): it will never start (cancel it)"
    joiner = " or " if "?" in text else " and "
    return f"waiting for {joiner.join(parts)}" if parts else f"waiting for {text}"


def normalize_state(state: str | None) -> str:
    """``'CANCELLED by 0'`` -> ``'CANCELLED'``, ``'PD'`` -> ``'PENDING'``; unknown states pass through upper-cased."""
    word = (state or "").strip().split(" ")[0].rstrip("+").upper()
    return COMPACT_STATES.get(word, word) or "UNKNOWN"


@functools.lru_cache(maxsize=4096)
def parse_duration(text: str | None) -> float | None:
    """Slurm durations (``1-02:03:04``, ``02:03:04``, ``3:04``, ``5``) in seconds; UNLIMITED/N/A/INVALID -> None."""
    text = (text or "").strip()
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+(?:\.\d+)?))?", text)
    if not match:
        return None
    days, a, b, c = match.groups()
    if b is None and c is None:  # a bare number is minutes (sbatch --time syntax), hours after a day count
        seconds = int(a) * (3600.0 if days else 60.0)
    elif c is None:  # MM:SS, or HH:MM after a day count
        seconds = int(a) * 3600.0 + int(b) * 60.0 if days else int(a) * 60.0 + int(b)
    else:
        seconds = int(a) * 3600.0 + int(b) * 60.0 + float(c)
    return seconds + int(days or 0) * 86400.0


@functools.lru_cache(maxsize=4096)
def parse_time(text: str | None) -> float | None:
    """A Slurm timestamp (``2026-11-27T21:05:03``) as epoch seconds in local time; Unknown/None/N/A -> None."""
    match = re.fullmatch(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)", (text or "").strip())
    if not match:
        return None
    return time.mktime(tuple(int(g) for g in match.groups()) + (0, 0, -1))


def expand_array(spec: str) -> list[int] | None:
    """``'[0-3,7,10-14:2%4]'`` or ``'5'`` -> task ids; None when it is not an array spec."""
    spec = spec.strip().strip("[]").split("%")[0]
    tasks: list[int] = []
    for part in filter(None, spec.split(",")):
        match = re.fullmatch(r"(\d+)(?:-(\d+)(?::(\d+))?)?", part)
        if not match:
            return None
        first, last, stride = match.groups()
        tasks.extend(range(int(first), int(last or first) + 1, int(stride or 1)))
    return tasks


def _limit(seconds: float | None) -> float | None:
    """A time limit; Slurm shows 'no limit' as 365 days in some places, which is None here."""
    return None if seconds is None or seconds >= 365 * 86400 else seconds


def _clean(value: str | None) -> str | None:
    value = (value or "").strip()
    return None if value in ("", "N/A", "(null)", "None", "Unknown") else value


def parse_squeue(text: str, wanted: set[str] | None = None) -> tuple[dict[str, dict], int]:
    """``squeue -h -O`` lines (``SEP``-separated ``SQUEUE_FIELDS``) -> ({job_id: record}, count of odd lines).

    The key is the display id: ``123`` for a plain job, ``123_4`` for an array task. An unexpanded pending array
    (``123_[5-99]``, older Slurm or a huge array) is expanded here so every task gets its own record. ``wanted``
    (job or array ids) skips everything else cheaply. Tasks whose fields are the same (a queued array) share one
    record object, which is never modified: 10,000 queued tasks parse as one.
    """
    records: dict[str, dict] = {}
    shared: dict[str, dict] = {}
    bad = 0
    count = len(SQUEUE_FIELDS)
    for line in text.splitlines():
        head = line.split(SEP, 3)  # JobID, ArrayJobID, ArrayTaskID, then the rest (shared by a queued array's tasks)
        if len(head) < 4:
            bad += bool(line.strip())
            continue
        array_id = head[1].strip()
        if wanted is not None and array_id not in wanted:
            continue
        job_id, task, rest = head[0].strip(), _clean(head[2]), head[3]
        record = shared.get(rest)
        if record is None:
            parts = rest.split(SEP, count - 4)  # the name comes last and may hold anything
            fields = SQUEUE_FIELDS
            if len(parts) < count - 3 or not _TIME_OR_NONE.fullmatch(parts[SQUEUE_FIELDS.index("SubmitTime") - 3]):
                fields = SQUEUE_BEFORE_LATER  # output of the earlier command (recorded fixtures)
                parts = rest.split(SEP, len(fields) - 4)
                if len(parts) < len(fields) - 3:
                    bad += 1
                    continue
            raw = dict(zip(fields[3:], parts))
            record = shared[rest] = _squeue_record({"SubmitTime": "", "Dependency": "", **raw})
        if array_id and task:  # an array task, or an unexpanded range of them
            tasks = [int(task)] if task.isdigit() else expand_array(task)
            if tasks is None:
                bad += 1
                continue
            for t in tasks:
                records[f"{array_id}_{t}"] = record
        elif job_id:
            records[job_id] = record
        else:
            bad += 1
    return records, bad


def _squeue_record(raw: dict[str, str]) -> dict:
    restarts = raw["RestartCnt"].strip()
    return {
        "state": normalize_state(raw["State"]),
        "reason": _clean(raw["Reason"]),
        "elapsed_s": parse_duration(raw["TimeUsed"]),
        "time_limit_s": _limit(parse_duration(raw["TimeLimit"])),
        "node": _clean(raw["NodeList"]),
        "restarts": int(restarts) if restarts.isdigit() else None,
        "start": parse_time(raw["StartTime"]),
        "end": parse_time(raw["EndTime"]),
        "slurm_name": raw["Name"].strip(),
        "submit": parse_time(raw["SubmitTime"]),
        "dependency": _clean(raw["Dependency"]),
    }


def parse_sacct(text: str, fields=SACCT_FIELDS) -> tuple[dict[str, dict], dict[str, list[tuple[list[int], dict]]], int]:
    """``sacct -X -D -P -n`` lines -> ({job_id: latest record}, {array_id: [(tasks, record)]}, bad lines).

    With ``-D`` a requeued job has one record per start; the last one is current and the others count as restarts.
    Array ranges (``123_[4-99]``, tasks that never started) go to the second mapping.
    """
    records: dict[str, dict] = {}
    ranges: dict[str, list] = {}
    bad = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split("|")
        if len(parts) < len(fields):
            bad += 1
            continue
        raw = dict(zip(fields, parts[: len(fields) - 1]))
        raw[fields[-1]] = "|".join(parts[len(fields) - 1:])
        job_id = raw["JobID"].strip()
        if "." in job_id:  # a step (when -X is ignored)
            continue
        record = {
            "state": normalize_state(raw.get("State")),
            "exit_code": _clean(raw.get("ExitCode")),
            "elapsed_s": parse_duration(raw.get("Elapsed")),
            "time_limit_s": _limit(parse_duration(raw.get("Timelimit"))),
            "node": _clean(raw.get("NodeList")),
            "reason": _clean(raw.get("Reason")),
            "submit": parse_time(raw.get("Submit")),
            "start": parse_time(raw.get("Start")),
            "end": parse_time(raw.get("End")),
            "slurm_name": raw.get("JobName"),
        }
        if record["node"] == "None assigned":
            record["node"] = None
        base, _, task = job_id.partition("_")
        if task.startswith("["):
            tasks = expand_array(task)
            if tasks is None:
                bad += 1
            else:
                ranges.setdefault(base, []).append((tasks, record))
            continue
        previous = records.get(job_id)
        if previous is not None:  # another start of a requeued job: the latest submission is the current one
            record["restarts"] = previous["restarts"] + 1
            if (record["submit"] or 0) < (previous["submit"] or 0):
                record = dict(previous, restarts=record["restarts"])
        else:
            record["restarts"] = 0
        records[job_id] = record
    return records, ranges, bad


def squeue_command(user: str | None, states: str | None = None) -> list[str]:
    """``squeue`` for every job of ``user``, one line per array task (``-r``), fields ``SEP``-separated and uncut
    (``:0``). ``states=None``: squeue's default, the queued and running jobs; ``"all"`` adds the jobs that ended
    within the controller's MinJobAge (5 minutes by default), so recent endings are known without ``sacct``."""
    fmt = ",".join(f"{name}:0{SEP}" if name != SQUEUE_FIELDS[-1] else f"{name}:0" for name in SQUEUE_FIELDS)
    return ["squeue", "-r", "-h", *(["-t", states] if states else []), *(["-u", user] if user else []), "-O", fmt]


def sacct_command(job_ids: list[str] | None, user: str | None, since: str) -> list[str]:
    argv = ["sacct", "-X", "-D", "-P", "-n", "-o", ",".join(SACCT_FIELDS)]
    if job_ids is not None:
        return argv + ["-j", ",".join(job_ids)]
    return argv + [*(["-u", user] if user else ["-a"]), "-S", since]


# ---- what jobs used: sacct's allocation per attempt ---------------------------------------------------------------

ATTEMPT_FIELDS = ("JobID", "State", "Start", "End", "NNodes")


def attempts_command(job_ids: list[str]) -> list[str]:
    """``sacct`` for every attempt (``-D``: each requeue is a line of its own) of these jobs."""
    return ["sacct", "-X", "-D", "-P", "-n", "-j", ",".join(job_ids), "-o", ",".join(ATTEMPT_FIELDS)]


def parse_attempts(text: str) -> dict[tuple[str, int], dict]:
    """:func:`attempts_command` output -> {(job id, restart count): ``state``, ``start``, ``end`` (epoch seconds; None
    while unknown), ``nodes``}. A requeued job's lines are its attempts in order of their start; lines of attempts
    that never started and odd lines are left out."""
    by_job: dict[str, list[dict]] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) != len(ATTEMPT_FIELDS) or parse_time(parts[2]) is None:
            continue
        by_job.setdefault(parts[0], []).append({"state": normalize_state(parts[1]), "start": parse_time(parts[2]),
                                                "end": parse_time(parts[3]),
                                                "nodes": int(parts[4]) if parts[4].isdigit() else None})
    return {(job, i): record for job, records in by_job.items()
            for i, record in enumerate(sorted(records, key=lambda r: r["start"]))}


USAGE_FIELDS = ("JobID", "State", "ElapsedRaw", "AllocTRES")
LOST_STATES = {"FAILED", "CANCELLED", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}
"""Attempts that ended without completing and without checkpointing for a requeue (a requeued attempt, REQUEUED,
PREEMPTED or TIMEOUT, saved a checkpoint on its signal and the next attempt went on from it)."""


def usage_command(job_ids: list[str]) -> list[str]:
    """``sacct`` for every attempt (``-D``: requeues too) of these jobs (array ids cover their tasks)."""
    return ["sacct", "-X", "-D", "-P", "-n", "-j", ",".join(job_ids), "-o", ",".join(USAGE_FIELDS)]


def parse_usage(text: str) -> list[dict]:
    """:func:`usage_command` output -> one record per attempt: ``job_id``, ``state``, ``elapsed_s``, ``gpus`` and
    ``cpus`` (from AllocTRES: ``gres/gpu=8``, or the sum of ``gres/gpu:TYPE=N``). Pending jobs (no allocation) and
    odd lines are left out."""
    records = []
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) != len(USAGE_FIELDS) or not parts[2].isdigit() or not parts[3]:
            continue
        tres = {k: int(v) for k, v in (item.split("=", 1) for item in parts[3].split(",") if "=" in item)
                if v.isdigit()}
        gpus = tres.get("gres/gpu", sum(v for k, v in tres.items() if k.startswith("gres/gpu:")))
        records.append({"job_id": parts[0], "state": normalize_state(parts[1]), "elapsed_s": int(parts[2]),
                        "gpus": gpus, "cpus": tres.get("cpu", 0)})
    return records
