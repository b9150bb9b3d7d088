"""The library's own structure: typed errors instead of exits, private transformers API in one adapter.
(tests/test_layout.py keeps the import rules: no cycles, the library never imports the launcher.)"""

import ast

from tests.test_layout import ROOT


def _library_files():
    return sorted((ROOT / "memorymodels").rglob("*.py"))


def test_library_code_raises_typed_errors_never_system_exit():
    """Only main() entry points (and ``if __name__ == "__main__"``) turn errors into exit codes."""
    offenders = []
    for path in _library_files():
        tree = ast.parse(path.read_text(), filename=str(path))
        allowed = set()
        for node in ast.walk(tree):
            if ((isinstance(node, ast.FunctionDef) and node.name == "main")
                    or (isinstance(node, ast.If) and "__main__" in ast.unparse(node.test))):
                allowed.update(id(n) for n in ast.walk(node))
        for node in ast.walk(tree):
            text = ast.unparse(node) if isinstance(node, ast.Raise) or (
                isinstance(node, ast.Call) and ast.unparse(node.func) == "sys.exit") else ""
            if (text.startswith("raise SystemExit") or text.startswith("sys.exit(")) and id(node) not in allowed:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {text[:60]}")
    assert not offenders, "library code must raise a typed error; only main() exits:\n" + "\n".join(offenders)


def test_private_trainer_api_is_used_only_in_the_adapter():
    """transformers' private Trainer methods are overridden or called in memorymodels/hf_adapter.py alone."""
    offenders = []
    for path in _library_files():
        if path.name == "hf_adapter.py":
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            if not any(ast.unparse(base).endswith("Trainer") for base in cls.bases):
                continue
            for node in ast.walk(cls):
                private = lambda name: name.startswith("_") and not name.endswith("__")  # noqa: E731
                if isinstance(node, ast.FunctionDef) and private(node.name):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: overrides {cls.name}.{node.name}")
                elif isinstance(node, ast.Attribute) and private(node.attr) and "super()" in ast.unparse(node.value):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: calls super().{node.attr}")
    assert not offenders, "use memorymodels/hf_adapter.py for private transformers API:\n" + "\n".join(offenders)
