"""Run All as a student would, headless: every notebook executed as CI executes it (nbmake's runner and
its parameters cell's smoke mocks), with every prediction locked in, so that every answer not behind a
button reaches the outputs and its place can be checked (notebooks/README.md, "Exercises and solutions").

Each notebook takes 0.5-2 minutes on one core. This is the one execution of the notebooks in `make test`.
"""

import re
from pathlib import Path

import pytest

from rslad_kit import solutions

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def shown(outputs):
    return "".join(str(data) for o in outputs for data in (o.get("data", {}), o.get("text", "")))


def executed(path, monkeypatch):
    """The notebook run as CI runs it (nbmake, its parameters cell's smoke mocks), every prediction
    locked in, so that every answer not behind a button reaches the outputs."""
    nb_run = pytest.importorskip("nbmake.nb_run")
    monkeypatch.setenv(solutions.AUTO_PREDICT, "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    result = nb_run.NotebookRun(path, 600).execute()
    assert result.error is None, result.error and result.error.summary
    return result.nb.cells


# The notebooks are split over this file and test_notebooks_run_all_2.py, since `--dist loadfile` gives
# each file to one worker: the two halves can then run side by side (91 s for both, on 2 idle cores).
FIRST_HALF = NOTEBOOKS[:len(NOTEBOOKS) // 2]


@pytest.mark.slow
@pytest.mark.parametrize("path", FIRST_HALF, ids=lambda p: p.stem)
def test_run_all_never_shows_an_answer_before_its_experiment(path, monkeypatch):
    check_run_all(path, monkeypatch)


def check_run_all(path, monkeypatch):
    """Every answer appears after its experiment's output, never before; one behind a button not at all
    (Run All does not press buttons); a code exercise left blank runs the kit's solution."""
    nb = executed(path, monkeypatch)
    code_cells = [i for i, c in enumerate(nb) if c.cell_type == "code"]
    for i in code_cells:
        for key in re.findall(r'solutions\.predict\("([^"]+)"', nb[i].source):
            reveal = next(j for j in code_cells if j > i and "reveal" in nb[j].source)
            answer = solutions.SOLUTIONS[key].splitlines()[0][:40]
            before = [j for j in code_cells if j < reveal and answer in shown(nb[j].outputs)]
            assert not before, f"{key}: the answer is shown in cell {before[0]}, before its experiment"
            if "RunButton" in nb[reveal].source:
                assert answer not in shown(nb[reveal].outputs), f"{key}: answered before its button ran"
                continue
            experiment = [j for j in code_cells if i < j < reveal]
            assert experiment and any(nb[j].outputs for j in experiment), f"{key}: no experiment output"
            assert answer in shown(nb[reveal].outputs), f"{key}: the answer never appears"
    for i in code_cells:
        if "solutions.check(" in nb[i].source:   # the student's cell, as committed: left blank
            assert "not attempted" in shown(nb[i].outputs) and "kit's solution" in shown(nb[i].outputs)


def test_a_figure_from_the_figures_module_shows_as_an_image_in_a_kernel(tmp_path):
    """`figures` returns bare Figure objects; Jupyter shows them as images only once `lab.setup` has
    loaded pyplot's backend (before that, a notebook printed "<Figure size ...>" instead)."""
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    code = (f"from rslad_kit import figures, lab\nL = lab.setup('smoke', runs={str(tmp_path)!r}, threads=1)\n"
            "figures.eps_curves([0.0, 0.1], {'sat': [90.0, 40.0]})")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    assert "image/png" in nb.cells[0].outputs[-1]["data"]
