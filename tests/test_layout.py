"""The code's layering: gradcam/ stands alone, and nothing patches sys.path (pip install -e . does it)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_gradcam_never_imports_the_application():
    offenders = {p.name: sorted(m for m in imported_modules(p) if m.split(".")[0] == "expression")
                 for p in (ROOT / "gradcam").glob("*.py")}
    assert not any(offenders.values()), offenders


def test_no_file_edits_sys_path():
    sources = [p for folder in ("", "expression", "gradcam", "bench", "data", "tests")
               for p in (ROOT / folder).glob("*.py") if p.resolve() != Path(__file__).resolve()]
    assert len(sources) > 20
    assert [p for p in sources if "sys.path.insert" in p.read_text(encoding="utf-8")
            or "sys.path.append" in p.read_text(encoding="utf-8")] == []


# Scripts -> application modules (they know the command line) -> core modules. A core module that
# imported the command-line layer would tie the library back to the scripts' flags.
APPLICATION = {"cli", "trainer", "explain_figures", "explanation_report", "webapp"}


def expression_imports(path: Path) -> set[str]:
    """The expression modules `path` imports, by short name (relative or absolute imports)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names.update([node.module] if node.module else [alias.name for alias in node.names])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("expression."):
            names.add(node.module.split(".")[1])
    return names


def test_core_modules_never_import_the_command_line_layer():
    core = [p for p in (ROOT / "expression").glob("*.py") if p.stem not in APPLICATION | {"__init__"}]
    assert len(core) > 15 and any(p.stem == "checkpoint" for p in core)
    offenders = {p.stem: sorted(expression_imports(p) & APPLICATION) for p in core}
    assert not any(offenders.values()), offenders
    # the check itself sees imports: the application modules do import the command-line layer
    assert "cli" in expression_imports(ROOT / "expression" / "trainer.py")


def test_device_is_declared_once():
    """Every script's --device comes from cli.add_device_argument: one list of devices, one help text."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    declared = [path.relative_to(root).as_posix() for folder in (root, root / "expression", root / "bench")
                for path in folder.glob("*.py") if 'add_argument("--device"' in path.read_text()]
    assert declared == ["expression/cli.py"]
