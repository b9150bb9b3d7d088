"""``--diff PROFILE``: what changes when the same job is planned on another node type, for people.

    python launch/submit.py --profile v100x8 --diff a100x8
"""

from __future__ import annotations

import dataclasses
import difflib
import shlex

from memorymodels.rundir import RunPaths
from launch.planning.plan import JobPlan


def diff_plans(first: JobPlan, second: JobPlan) -> str:
    """What changes when the same experiment runs on ``second``'s profile instead of ``first``'s, for people
    (``--diff``): profile keys, sbatch parameters, trainer overrides, then line diffs of the launch command (one
    argument per line), the accelerate config and the sbatch script. Only what differs is shown. Pure."""
    def changes(title: str, a: dict, b: dict) -> list[str]:
        keys = [k for k in dict.fromkeys([*a, *b]) if a.get(k, "(unset)") != b.get(k, "(unset)")]
        width = max((len(k) for k in keys), default=0)
        return [f"# {title}"] + [f"  {k:<{width}}  {a.get(k, '(unset)')} -> {b.get(k, '(unset)')}" for k in keys] \
            if keys else []

    names = RunPaths(first.run_dir)

    def lines(title: str, a: str | None, b: str | None) -> list[str]:
        diff = list(difflib.unified_diff((a or "").splitlines(), (b or "").splitlines(), lineterm="", n=1))[2:]
        return [f"# {title}", *diff] if diff else []

    def profile_keys(plan: JobPlan) -> dict:
        return {k: v for k, v in dataclasses.asdict(plan.profile).items() if k not in ("name", "source", "description")}

    def overrides(plan: JobPlan) -> dict:
        return dict(item.split("=", 1) for item in plan.overrides)

    def arguments(plan: JobPlan) -> str:
        return "\n".join(shlex.split(plan.command))

    sections = [
        changes("profile", profile_keys(first), profile_keys(second)),
        changes("job", {"processes per node": first.procs_per_node, "run dir": first.run_dir},
                {"processes per node": second.procs_per_node, "run dir": second.run_dir}),
        changes("sbatch parameters", {k: v for k, v in first.sbatch.items() if k != "job_name"},
                {k: v for k, v in second.sbatch.items() if k != "job_name"}),
        changes("trainer overrides (--set)", overrides(first), overrides(second)),
        lines("launch command, one argument per line", arguments(first), arguments(second)),
        lines(names.accelerate_config.name, first.accelerate_config, second.accelerate_config),
        lines(names.experiment.name, first.experiment_text, second.experiment_text),
        lines(names.script.name, first.script, second.script)]
    head = f"--- {first.profile.name} ({first.profile.source})\n+++ {second.profile.name} ({second.profile.source})"
    body = "\n\n".join("\n".join(section) for section in sections if section)
    return f"{head}\n\n{body}" if body else f"{head}\nno differences: the two profiles plan the same job"
