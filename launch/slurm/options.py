"""How Slurm's ``sbatch`` and ``srun`` read their options: every long option (22.05, asked of the binaries: ``sbatch
--c`` lists the options that start with ``c``), the short letters, and which short options take no value.

    python -c "from launch.slurm.options import read_srun_args; print(read_srun_args(['-lo', 'x', '--err=y']))"

Slurm parses its options with ``getopt_long``: a long option may be abbreviated to any prefix that names one option
alone (``--out`` is ``--output``; ``--co`` is refused as ambiguous), its value follows ``=`` or comes as the next
word, and short options cluster (``-lo x`` is ``-l -o x``; ``-ox`` is ``-o x``). :func:`long_option` and
:func:`read_srun_args` read a spelling the same way, so a check of "which option is this" cannot be sidestepped by
another spelling. Pure data and functions; which options the launcher owns is ``launch.planning.options``'s.
"""

from __future__ import annotations

from typing import Iterable

SBATCH_LONG = frozenset("""
account acctg-freq array batch bb bbf begin chdir cluster cluster-constraint clusters comment constraint container
context contiguous core-spec cores-per-socket cpu-freq cpus-per-gpu cpus-per-task deadline delay-boot dependency
distribution error exclude exclusive export export-file extra-node-info get-user-env gid gpu-bind gpu-freq gpus
gpus-per-node gpus-per-socket gpus-per-task gres gres-flags help hint hold ignore-pbs input job-name
kill-on-invalid-dep licenses mail-type mail-user mcs-label mem mem-bind mem-per-cpu mem-per-gpu mincpus network nice
no-kill no-requeue nodefile nodelist nodes ntasks ntasks-per-core ntasks-per-gpu ntasks-per-node ntasks-per-socket
ntasks-per-tres open-mode output overcommit oversubscribe parsable partition power prefer priority profile propagate
qos quiet reboot requeue reservation signal sockets-per-node spread-job switches tasks-per-node test-only thread-spec
threads-per-core time time-min tmp uid usage use-min-nodes verbose version wait wait-all-nodes wckey wrap
""".split())
"""sbatch's long options (Slurm 22.05)."""

PYXIS_LONG = frozenset("container-image container-mounts container-workdir container-name container-save "
                       "container-mount-home no-container-mount-home container-remap-root no-container-remap-root "
                       "container-entrypoint no-container-entrypoint container-writable container-readonly".split())
"""The options the pyxis SPANK plugin adds to srun (read like srun's own: abbreviations included)."""

SRUN_LONG = frozenset("""
accel-bind account acctg-freq bb bbf bcast bcast-exclude begin chdir cluster cluster-constraint clusters comment
compress constraint container context contiguous core-spec cores-per-socket cpu-bind cpu-freq cpus-per-gpu
cpus-per-task deadline debugger-test delay-boot dependency disable-status distribution epilog error exact exclude
exclusive export extra-node-info gid gpu-bind gpu-freq gpus gpus-per-node gpus-per-socket gpus-per-task gres
gres-flags help het-group hint hold immediate input interactive job-name jobid kill-on-bad-exit label licenses
mail-type mail-user mcs-label mem mem-bind mem-per-cpu mem-per-gpu mincpus mpi msg-timeout multi-prog network nice
no-allocate no-kill nodefile nodelist nodes ntasks ntasks-per-core ntasks-per-gpu ntasks-per-node ntasks-per-socket
ntasks-per-tres open-mode output overcommit overlap oversubscribe pack-group partition power prefer preserve-env
priority profile prolog propagate pty qos quiet quit-on-interrupt reboot relative reservation resv-ports send-libs
signal slurmd-debug sockets-per-node spread-job switches task-epilog task-prolog tasks-per-node test-only thread-spec
threads threads-per-core time time-min tmp uid unbuffered usage use-min-nodes verbose version wait wckey whole x11
""".split()) | PYXIS_LONG
"""srun's long options (Slurm 22.05), with pyxis's."""

SRUN_SHORT = {"A": "account", "b": "begin", "B": "extra-node-info", "c": "cpus-per-task", "C": "constraint",
              "d": "dependency", "D": "chdir", "e": "error", "E": "preserve-env", "G": "gpus", "h": "help",
              "H": "hold", "i": "input", "I": "immediate", "J": "job-name", "k": "no-kill", "K": "kill-on-bad-exit",
              "l": "label", "L": "licenses", "m": "distribution", "M": "clusters", "n": "ntasks", "N": "nodes",
              "o": "output", "O": "overcommit", "p": "partition", "q": "qos", "Q": "quiet", "r": "relative",
              "s": "oversubscribe", "S": "core-spec", "t": "time", "T": "threads", "u": "unbuffered",
              "v": "verbose", "V": "version", "W": "wait", "w": "nodelist", "x": "exclude", "X": "disable-status",
              "Z": "no-allocate"}
"""srun's short options and the long option each one is."""

SRUN_SHORT_FLAGS = frozenset("EhHkKlOQsuvVXZI")
"""srun's short options that take no separate value (``-K`` and ``-I`` take one only attached: ``-K1``)."""


def long_option(word: str, options: Iterable[str]) -> list[str]:
    """The long options ``--word`` may mean, as ``getopt_long`` reads it: ``[word]`` when it is an option's full
    name, else every option it is a prefix of (one: Slurm takes that one; several: Slurm refuses it as ambiguous;
    none: Slurm does not know it)."""
    options = frozenset(options)
    if word in options:
        return [word]
    return sorted(option for option in options if option.startswith(word)) if word else []


def read_srun_args(args: Iterable[str]) -> list[tuple[str, list[str]]]:
    """Each option word of an srun argument list with the long options it may mean: ``(word, [long, ...])``, short
    clusters split (``-lo`` -> ``-l``, ``-o``). Words that are not options (values) are left out; so is everything
    after ``--``."""
    found = []
    for arg in args:
        if arg == "--":
            break
        if arg.startswith("--"):
            name = arg[2:].split("=", 1)[0]
            found.append((f"--{name}", long_option(name, SRUN_LONG)))
        elif arg.startswith("-") and len(arg) > 1:
            for i, letter in enumerate(arg[1:]):
                found.append((f"-{letter}", [SRUN_SHORT[letter]] if letter in SRUN_SHORT else []))
                if letter not in SRUN_SHORT_FLAGS:
                    break  # the rest of the word is this option's value
                if letter in "KI":
                    break  # an optional value, attached
    return found
