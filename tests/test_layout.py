"""The layout is the architecture: the library never imports the Slurm side."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_library_never_imports_launch():
    offenders = {
        str(path.relative_to(ROOT)): sorted(m for m in imported_modules(path) if m.split(".")[0] == "launch")
        for path in (ROOT / "memorymodels").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_models_have_no_device_moves_or_cuda_globals():
    for path in (ROOT / "memorymodels" / "models").rglob("*.py"):
        text = path.read_text()
        assert ".cuda(" not in text and "torch.device(\"cuda" not in text, path
        assert ".to(device)" not in text, f"{path}: models are single-device code; the trainer places them"
