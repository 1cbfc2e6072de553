"""The package's floors (STYLE.md, "Keep the floors") and its face: a lower floor never imports a higher
one, only code that trains imports `train`, and the README's example runs on the flat API."""

import ast
import re
from pathlib import Path

import pytest

import rslad_kit

PACKAGE = Path(rslad_kit.__file__).parent
ROOT = PACKAGE.parent

# What models, data and attacks are made of, and what loads and evaluates them: none of it may reach up
# to the code that trains, plans, reports or draws.
LOWER = ("errors", "losses", "stats", "config", "data", "models", "attacks", "runs", "gpu", "loading", "evaluate")
UPPER = ("train", "plan", "reproduce", "report", "figures", "paper_figures", "lab", "cli", "sweep", "teacher_study")
# Code that trains models (or runs a plan that does); nothing else needs `train`.
TRAINS = ("reproduce", "lab", "cli")


def imported(module: str) -> set[str]:
    """The rslad_kit modules `module` imports anywhere in its file, inside functions too."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            if node.module == "rslad_kit":   # `from rslad_kit import train`
                names |= {f"rslad_kit.{a.name}" for a in node.names}
    return {n.split(".")[1] for n in names if n.startswith("rslad_kit.")}


def test_every_module_is_on_a_floor():
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    middle = {"distributed", "graphs", "saliency", "soft_labels", "solutions"}   # between loading and training
    assert modules == set(LOWER) | set(UPPER) | middle


@pytest.mark.parametrize("module", LOWER)
def test_a_lower_floor_imports_no_upper_one(module):
    assert not imported(module) & set(UPPER)


def test_the_floor_test_sees_imports_inside_functions():
    assert {"train", "reproduce", "paper_figures"} <= imported("cli")


def test_figures_only_draw():
    """figures.py draws from data; loading checkpoints and computing what it draws is paper_figures'."""
    assert imported("figures") <= {"attacks", "evaluate", "plan"}


def test_only_code_that_trains_imports_train():
    modules = [p.stem for p in PACKAGE.glob("*.py") if p.stem != "train"]
    assert sorted(m for m in modules if "train" in imported(m)) == sorted(TRAINS)


def test_import_rslad_kit_is_cheap_and_the_flat_api_resolves():
    import subprocess
    import sys

    code = ("import sys, rslad_kit; assert 'torch' not in sys.modules, 'import rslad_kit loaded torch'; "
            "from rslad_kit import config, data, evaluate, figures, load_model, reproduce, train; "
            "from rslad_kit.loading import load_model as one; assert load_model is one; "
            "assert callable(train.train) and callable(evaluate.evaluate) and callable(reproduce.run); "
            "assert callable(figures.eps_curves)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    return re.search(r"## Using it\n\n```python\n(.*?)```", text, re.DOTALL).group(1)


def test_the_readme_example_uses_one_import_line_from_the_flat_api():
    imports = [line for line in readme_example().splitlines() if "import" in line]
    assert len(imports) == 1
    names = re.fullmatch(r"from rslad_kit import (.*)", imports[0]).group(1).split(", ")
    assert set(names) <= set(rslad_kit.__all__)


def test_the_readme_example_runs(tmp_path, monkeypatch):
    """The README's example, at the smoke preset (two epochs) and without AutoAttack (tens of seconds
    on a CPU): the same calls, in seconds."""
    code = readme_example().replace('"classroom"', '"smoke"').replace(', "autoattack"', "")
    assert code != readme_example()
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert (tmp_path / "runs" / "rslad" / "best.pt").is_file()
    assert 0 <= scope["row"]["pgd_trades"] <= scope["row"]["clean"] <= 100
