"""Run All, the second half of the notebooks (see tests/test_notebooks_run_all.py)."""

import pytest

from test_notebooks_run_all import FIRST_HALF, NOTEBOOKS, check_run_all


@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p not in FIRST_HALF], ids=lambda p: p.stem)
def test_run_all_never_shows_an_answer_before_its_experiment(path, monkeypatch):
    check_run_all(path, monkeypatch)
