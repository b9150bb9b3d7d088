"""The layout is the architecture: imports point one way, and nothing imports in a circle.

    launch/submit.py status.py sweep_report.py local_cluster.py     entry scripts (thin)
    launch/cli          -> monitor -> submission -> planning, node -> records, slurm
    launch/localcluster    beside: the development cluster; nothing in launch/ imports it
    memorymodels/          the library; never imports launch/
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"cli": 0, "monitor": 1, "submission": 2, "planning": 3, "node": 3, "records": 4, "slurm": 4}
"""A package may import only packages with a larger number (lower layers) and itself; equal numbers are siblings
that never import each other."""
ENTRY_SCRIPTS = {"submit.py": "launch.cli.submit", "status.py": "launch.cli.status",
                 "sweep_report.py": "launch.cli.report", "local_cluster.py": "launch.localcluster.cluster"}
DEFERRED_IMPORTS = {("launch/monitor/follow.py", "memorymodels.evaluate")}
"""Imports inside a function on purpose, each documented where it is: the launcher never loads torch."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    """Modules ``path`` imports (relative imports resolved), at module level only or anywhere."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(path)
    nodes = tree.body if top_level_only else ast.walk(tree)
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)  # `from launch.records import journal`
    return names


def sources(*folders: str) -> list[Path]:
    return [p for folder in folders for p in sorted((ROOT / folder).rglob("*.py"))]


def test_library_never_imports_launch():
    offenders = {str(p.relative_to(ROOT)): sorted(m for m in imports(p) if m.split(".")[0] == "launch")
                 for p in sources("memorymodels")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_launch_imports_point_down_the_layers():
    wrong = []
    for path in sources("launch"):
        parts = path.relative_to(ROOT / "launch").parts
        if len(parts) == 1:
            continue  # entry scripts and launch/__init__.py: checked below
        here = parts[0]
        for module in imports(path):
            bits = module.split(".")
            if bits[0] != "launch" or len(bits) < 2 or bits[1] == here:
                continue
            there = bits[1]
            if there == "localcluster":
                wrong.append(f"{path.relative_to(ROOT)} imports {module}: production code never imports the "
                             "development cluster (profiles name its slurm_conf)")
            elif here == "localcluster":
                if LAYERS.get(there) != 4:
                    wrong.append(f"{path.relative_to(ROOT)} imports {module}: the development cluster may use the "
                                 "bottom layers (slurm, records) only")
            elif there in LAYERS and LAYERS[there] <= LAYERS[here]:
                wrong.append(f"{path.relative_to(ROOT)} imports {module}: {here} may not import {there}")
    assert wrong == []


def test_entry_scripts_are_thin():
    for name, target in ENTRY_SCRIPTS.items():
        path = ROOT / "launch" / name
        launch_imports = {m for m in imports(path) if m.startswith("launch")}
        assert launch_imports <= {target, f"{target}.main"}, f"{name} imports {launch_imports}"
        assert len(path.read_text().splitlines()) <= 15, f"{name} should only hand over to {target}"
    extra = {p.name for p in (ROOT / "launch").glob("*.py")} - set(ENTRY_SCRIPTS) - {"__init__.py"}
    assert extra == set(), f"launch/ holds only entry scripts and packages; move {extra} into a package"


def deferred_imports(path: Path) -> set[str]:
    """Modules imported anywhere but at the top of ``path`` (inside functions, classes or conditionals)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top = {id(node) for node in tree.body}
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and id(node) not in top:
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and id(node) not in top and node.module != "__future__":
            found.add(node.module)
    return found


def test_imports_sit_at_the_top_of_modules():
    deferred = {(str(p.relative_to(ROOT)), m) for p in sources("launch") for m in deferred_imports(p)}
    assert deferred == DEFERRED_IMPORTS


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, result, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return result


@pytest.mark.parametrize("package", ["memorymodels", "launch"])
def test_no_import_cycles(package):
    paths = sources(package)
    known = {module_name(p) for p in paths}
    graph = {}
    for path in paths:
        name = module_name(path)
        targets = set()
        for module in imports(path):  # deferred imports count too: a cycle hidden in a function is still a cycle
            while module and module not in known:
                module = module.rpartition(".")[0]
            if module and module != name and not name.startswith(module + "."):
                targets.add(module)
        graph[name] = targets
    assert _cycles(graph) == []


def test_models_have_no_device_moves_or_cuda_globals():
    for path in (ROOT / "memorymodels" / "models").rglob("*.py"):
        text = path.read_text()
        assert ".cuda(" not in text and "torch.device(\"cuda" not in text, path
        assert ".to(device)" not in text, f"{path}: models are single-device code; the trainer places them"


RUN_FILES = ("run.json", "run.json.bak", "metrics.jsonl", "metrics.rolledback.jsonl", ".trainer.lock", "eval.json",
             "eval-history.jsonl", "tracking.json", "tensorboard", "events.jsonl", "job.sbatch", "experiment.yaml",
             "accelerate_config.yaml", "plan.json", ".submit.lock", "heartbeats", "hangs", "rendezvous")
"""The names of a run directory's files; ``memorymodels/rundir.py`` alone spells them (``RunPaths``)."""
SAME_NAME_ELSEWHERE = {("memorymodels/data/pipeline.py", "plan.json"),  # the data cache's own plan file
                       ("memorymodels/experiment.py", "tensorboard"),  # the tracker's name in train.report_to
                       ("memorymodels/tracking.py", "tensorboard"),
                       ("memorymodels/startup.py", "rendezvous"),  # a startup phase's name
                       ("memorymodels/train.py", "rendezvous")}
"""Strings that are such a name but mean something else, each with what it is."""


def _code_strings(path: Path) -> list[tuple[int, str]]:
    """The string constants of a module outside its docstrings (f-strings' literal parts included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = set()  # a bare string statement: a module's, class's or function's docstring, or an attribute's
    for node in ast.walk(tree):
        for field in ("body", "orelse"):
            statements = getattr(node, field, None)
            for stmt in statements if isinstance(statements, list) else []:
                if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
                    docstrings.add(id(stmt.value))
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_the_run_directory_has_one_owner():
    """A run-file name spelled outside ``memorymodels/rundir.py`` is a second owner of the layout: ask ``RunPaths``."""
    owner = ROOT / "memorymodels" / "rundir.py"
    spelled = [f"{path.relative_to(ROOT)}:{line}: {text!r}"
               for path in sources("memorymodels", "launch", "benchmarks") if path != owner
               for line, text in _code_strings(path)
               if (str(path.relative_to(ROOT)), text) not in SAME_NAME_ELSEWHERE
               and any(text == name or text.endswith("/" + name) or text.startswith(name + "/") for name in RUN_FILES)]
    assert spelled == []


def test_the_trainers_exit_codes_have_one_owner():
    """The trainer's exit codes are ``memorymodels.rundir.TrainerExit``; no module keeps copies (``EXIT_REQUEUE =
    75``). A command's own codes (``launch/cli/submit.py``'s 3: nothing left to do) are its own."""
    from memorymodels.rundir import TrainerExit

    special = {int(code) for code in TrainerExit} - {0, 2}  # 0 and 2 are every command's success and usage error
    copies = [f"{path.relative_to(ROOT)}: {target.id}" for path in sources("memorymodels", "launch", "benchmarks")
              for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Assign)
              and isinstance(node.value, ast.Constant) and node.value.value in special
              for target in node.targets if isinstance(target, ast.Name) and target.id.startswith("EXIT_")]
    assert copies == []
