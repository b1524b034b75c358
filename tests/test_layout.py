"""The code's layering: gradcam/ stands alone, and nothing patches sys.path (pip install -e . does it)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

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
    # The top level's own files only: a recursive search there would walk into a virtual environment.
    sources = [*ROOT.glob("*.py"), *(p for folder in ("expression", "gradcam", "bench", "data", "tests")
                                     for p in (ROOT / folder).rglob("*.py"))]
    sources = [p for p in sources if p.resolve() != Path(__file__).resolve()]
    assert len(sources) > 20
    assert [p for p in sources if "sys.path.insert" in p.read_text(encoding="utf-8")
            or "sys.path.append" in p.read_text(encoding="utf-8")] == []


# The layers, bottom to top, and the folders each may import. A lower layer that imported a higher one
# would tie the library back to the scripts' flags (apps) or pull training into prediction.
LAYERS = {
    "core": set(),
    "demo": {"core"},
    "training": {"core", "demo"},
    "inference": {"core", "demo"},  # ONNX export checks its parity on demo faces
    "reports": {"core", "demo", "inference"},
    "apps": {"core", "demo", "training", "inference", "reports"},
}


def expression_imports(path: Path) -> set[str]:
    """The expression sub-packages `path` imports (absolute imports; the package uses no relative ones)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        modules = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                   else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        assert not (isinstance(node, ast.ImportFrom) and node.level), f"{path.name}: relative import"
        for module in modules:
            parts = module.split(".")
            if parts[0] == "expression" and len(parts) > 1:
                names.add(parts[1])
            elif parts[0] == "expression" and isinstance(node, ast.ImportFrom):  # from expression import training
                names.update(alias.name for alias in node.names)
    return names


def test_expression_is_layer_folders_with_nothing_loose():
    package = ROOT / "expression"
    assert sorted(p.name for p in package.iterdir() if p.is_dir() and p.name != "__pycache__") == sorted(LAYERS)
    assert sorted(p.name for p in package.glob("*.py")) == ["__init__.py", "__main__.py", "commands.py"]


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_each_layer_imports_only_the_layers_below_it(layer):
    modules = sorted((ROOT / "expression" / layer).glob("*.py"))
    assert modules and (ROOT / "expression" / layer / "__init__.py") in modules
    offenders = {p.name: sorted(expression_imports(p) - LAYERS[layer] - {layer}) for p in modules}
    assert not any(offenders.values()), offenders


def test_the_import_check_sees_imports():
    """Guard against a checker that passes because it sees nothing: known imports are found."""
    assert {"core", "training", "demo"} <= expression_imports(ROOT / "expression" / "training" / "trainer.py")
    assert "core" in expression_imports(ROOT / "expression" / "inference" / "classifier.py")
    assert {"inference", "core"} <= expression_imports(ROOT / "expression" / "apps" / "webapp.py")


def test_no_library_module_sees_the_command_line():
    """Below apps/ no module takes or builds an argparse Namespace: they take frozen configs or keyword
    arguments, which the resolve steps in apps/cli.py build from the parsed flags."""
    library = [p for layer in LAYERS if layer != "apps" for p in (ROOT / "expression" / layer).glob("*.py")]
    assert len(library) > 25
    offenders = [p.relative_to(ROOT).as_posix() for p in library
                 if re.search(r"\bargparse\b|\bNamespace\b|\bargs\.(?!json\b)[a-z_]+", p.read_text(encoding="utf-8"))]
    assert offenders == []


def test_device_is_declared_once():
    """Every script's --device comes from cli.add_device_argument: one list of devices, one help text."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    sources = [*root.glob("*.py"), *(root / "expression").rglob("*.py"), *(root / "bench").glob("*.py")]
    declared = [path.relative_to(root).as_posix() for path in sources if 'add_argument("--device"' in path.read_text()]
    assert declared == ["expression/apps/cli.py"]
