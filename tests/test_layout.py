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
