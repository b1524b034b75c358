"""The README is the front door and docs/ holds the rest: every relative link and image resolves (with
its #anchor, by GitHub's heading slugs), no page points outside the repository, the README stays
short, the defaults it states are the code's, its test command is the one CI runs, and its API example runs."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import predict_FER
import train_resnet34
from expression.core.cam_policy import DEFAULT_CAM_LAYER, DEFAULT_CAM_METHOD
from expression.inference.classifier import DEFAULT_FACE_TTA
from expression.training.recipe import RECIPES

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
# Pages that must not point outside the repository (models/README.md sits beside the shipped model).
ALL_PAGES = [*PAGES, ROOT / "models" / "README.md"]
MAX_README_LINES = 250

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
LINK = re.compile(r"!?\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", re.M)


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def without_code_blocks(text: str) -> str:
    return FENCE.sub("", text)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: the rendered text (no backticks, link targets or emphasis
    marks), lowercase, punctuation dropped except hyphens and spaces (underscores are word
    characters and stay), spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for match in HEADING.finditer(without_code_blocks(page.read_text(encoding="utf-8"))):
        base = slug(match.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def relative_links(page: Path) -> list[str]:
    targets = [m.group("target") for m in LINK.finditer(without_code_blocks(page.read_text(encoding="utf-8")))]
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]  # http:, https:, mailto: ...


def resolve(page: Path, target: str) -> tuple[Path, str]:
    path, _, fragment = target.partition("#")
    return ((page.parent / path).resolve() if path else page), fragment


def inside_repository(path: Path) -> bool:
    return path == ROOT or ROOT in path.parents


def test_slug_follows_github():
    assert slug("Training in cycles: `--init`") == "training-in-cycles---init"
    assert slug("Which map to trust at 48 px") == "which-map-to-trust-at-48-px"
    assert slug("From Python: `FacePredictor`") == "from-python-facepredictor"
    assert slug("Recipes: `--recipe seed`, `strong`, `cpu`") == "recipes---recipe-seed-strong-cpu"
    assert slug("Are the maps faithful?") == "are-the-maps-faithful"
    assert slug("The `gradcam/` library") == "the-gradcam-library"


def test_docs_exist_and_readme_links_each():
    names = {p.name for p in DOCS}
    assert {"training.md", "shipped-model.md", "explanations.md", "prediction.md", "app.md", "results.md",
            "reliability.md", "development.md"} <= names
    linked = {resolve(README, t)[0] for t in relative_links(README)}
    assert not [rel(p) for p in DOCS if p.resolve() not in linked], "every docs/ page is linked from the README"


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_every_relative_link_and_image_resolves(page):
    problems = []
    for target in relative_links(page):
        path, fragment = resolve(page, target)
        if not inside_repository(path):
            problems.append(f"{target}: outside the repository")
        elif not path.exists():
            problems.append(f"{target}: no such file")
        elif fragment:
            if path.suffix != ".md":
                problems.append(f"{target}: an anchor into a file that is not Markdown")
            elif fragment not in anchors(path):
                problems.append(f"{target}: no heading #{fragment} in {rel(path)}")
    assert not problems, f"{rel(page)}:\n" + "\n".join(problems)


@pytest.mark.parametrize("page", ALL_PAGES, ids=rel)
def test_no_page_points_outside_the_repository(page):
    """`../` appears only in a link from docs/ (or models/) back into the repository, e.g. an img/
    figure; never in a command, a path in prose, or anywhere in the README."""
    text = page.read_text(encoding="utf-8")

    def drop_internal(match):
        path, _ = resolve(page, match.group("target"))
        return "" if inside_repository(path) and page != README else match.group(0)

    rest = LINK.sub(drop_internal, text)
    lines = [line for line in rest.splitlines() if "../" in line]
    assert not lines, f"{rel(page)} mentions ../ outside a link into the repository: {lines}"
    assert "shared/fer2013" not in text


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


def readme() -> str:
    return README.read_text(encoding="utf-8")


def test_readme_quickstart_commands_are_unchanged():
    text = readme()
    assert "pip install -r requirements.txt && python train_resnet34.py --demo\n" in text
    assert "pip install -r requirements.txt -r requirements-test.txt && python -m pytest -q\n" in text


def ci_test_command() -> str:
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    commands = [line for line in lines if line and not line.startswith("#")]
    return commands[-1]


def test_readme_test_command_is_the_one_ci_runs():
    command = ci_test_command()
    assert command == "python -m pytest -q"
    text = readme()
    tests = text[text.index("\n## Tests\n"):]
    block = re.search(r"```bash\n(.*?)```", tests, re.S).group(1).strip()
    assert block == command, "the README's Tests command and .ci/run's last command must be identical"
    assert f"&& {command}\n" in text  # the Quickstart's second command ends with it
    assert re.search(rf"^{re.escape(command)}$", text, re.M)


def normalised(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def test_readme_states_the_code_default_cam():
    pairs = re.findall(r"default(?: map)?,? \**`?([A-Za-z][\w+-]*)`? at\s+`?(layer\d|fused)`?", readme())
    assert len(pairs) >= 2, "the README names the default map (predict_FER.py --cam and the app)"
    for method, layer in pairs:
        assert (normalised(method), layer) == (DEFAULT_CAM_METHOD, DEFAULT_CAM_LAYER)
    cam = re.search(r"`--cam` alone is `(\w+)` at `(\w+)`", (ROOT / "docs" / "prediction.md").read_text())
    assert cam and cam.groups() == (DEFAULT_CAM_METHOD, DEFAULT_CAM_LAYER)


def test_stated_tta_defaults_are_the_code_default():
    assert predict_FER.get_args_parser().get_default("tta") == DEFAULT_FACE_TTA
    stated = re.findall(r"`--tta` \(default `(\w+)`\)", readme())
    assert stated and set(stated) == {DEFAULT_FACE_TTA}
    for page in DOCS:  # option tables: | `--tta` | `flip` | ... (evaluate.py's --tta table has no default cell)
        for value in re.findall(r"^\| `--tta` \| `(\w+)` \|", page.read_text(encoding="utf-8"), re.M):
            assert value == DEFAULT_FACE_TTA, f"{rel(page)} says --tta defaults to {value}"


def test_stated_seed_recipe_is_the_code_recipe():
    seed = RECIPES["seed"]
    batch = train_resnet34.get_args_parser().get_default("batch_size")
    assert train_resnet34.get_args_parser().get_default("recipe") == "seed"
    for page in (README, ROOT / "docs" / "training.md"):
        found = re.findall(r"(\d+) px, (\d+) epochs, batch (\d+), (\w+) lr ([0-9.e-]+)", page.read_text())
        assert found, f"{rel(page)} states the seed recipe"
        for size, epochs, batch_size, optimizer, lr in found:
            assert (int(size), int(epochs), int(batch_size), optimizer.lower(), float(lr)) == \
                (seed["img_size"], seed["epochs"], batch, seed["optimizer"], seed["lr"])


def test_recipe_table_is_the_code_recipes():
    text = (ROOT / "docs" / "training.md").read_text()
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].startswith("`--"):
            rows[cells[0]] = cells[1:4]
    names = ("seed", "strong", "cpu")
    assert [rows["`--img-size`"][i] for i in range(3)] == [str(RECIPES[n]["img_size"]) for n in names]
    assert [rows["`--epochs`"][i] for i in range(3)] == [str(RECIPES[n]["epochs"]) for n in names]
    for i, name in enumerate(names):
        optimizer, lr = (v.strip() for v in rows["`--optimizer`, `--lr`"][i].split(","))
        assert (optimizer, float(lr)) == (RECIPES[name]["optimizer"], RECIPES[name]["lr"])


def test_readme_python_api_runs_and_prints_what_it_says(capsys):
    """The README's five-line API example, run as written, prints the line the README quotes."""
    pytest.importorskip("skimage")
    section = README.read_text(encoding="utf-8").split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    quoted = re.search(r"prints `([^`]+)`", section).group(1)
    assert "from expression.inference import FacePredictor" in code and len(code.strip().splitlines()) <= 6
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out.strip()
    # the box and label exactly; the probability to the rounding another CPU's float maths may shift
    assert printed.rsplit(" ", 1)[0] == quoted.rsplit(" ", 1)[0]
    assert float(printed.rsplit(" ", 1)[1]) == pytest.approx(float(quoted.rsplit(" ", 1)[1]), abs=1e-4)
