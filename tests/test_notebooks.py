"""The notebooks' contract and their widgets, headless.

pytest's `--nbmake` executes every notebook in smoke mode (see pyproject); these tests check what
that cannot: the committed form of each notebook, and that the widgets' callbacks redraw what they
should when a control changes.
"""

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch

from rslad_kit import UserError, attacks, lab, models, runs, solutions, train
from rslad_kit.config import preset

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def cells(path, kind="code"):
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == kind]


def source(cell):
    return "".join(cell["source"])


# --- the notebooks as committed ---------------------------------------------------------------------

def test_the_walkthrough_is_ordered():
    assert [p.stem for p in NOTEBOOKS] == [
        "00_setup_and_story", "01_data_models_teachers", "02_attacks", "03_table1_losses", "04_training",
        "05_soft_labels", "06_attention_maps", "07_teacher_choice", "08_reproducing_the_tables"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_clean_with_a_ci_parameters_cell(path):
    code = cells(path)
    assert all(not c["outputs"] and c["execution_count"] is None for c in code), "commit without outputs"
    params = [c for c in code if "parameters" in c["metadata"].get("tags", [])]
    assert len(params) == 1 and params[0] is code[0], "the first code cell, and only it, is the parameters cell"
    mock = params[0]["metadata"]["nbmake"]["mock"]
    assert mock["SCALE"] == "smoke"
    assert mock["RUNS"] == f"runs/ci-{path.stem[:2]}", "each notebook its own CI runs folder (they run in parallel)"
    assert 'SCALE = "classroom"' in source(params[0])
    intro = source(cells(path, "markdown")[0])
    assert "**Learning goals**" in intro and "**Run time**" in intro
    too_long = [source(c).splitlines()[0] for c in code[1:] if len(source(c).splitlines()) > 15]
    assert not too_long, f"code cells over 15 lines: {too_long}"


def test_every_exercise_has_a_solution_and_every_solution_an_exercise():
    shown = {key for path in NOTEBOOKS for c in cells(path)
             for key in re.findall(r'solutions\.show\("([^"]+)"\)', source(c))}
    assert shown == set(solutions.SOLUTIONS)
    for key in shown:
        notebook = next(p for p in NOTEBOOKS if p.stem.startswith(key.split(".")[0]))
        prompts = "".join(source(c) for c in cells(notebook, "markdown"))
        assert f"Exercise {key}" in prompts, f"{key}: the notebook asks for a prediction first"


def test_an_unknown_solution_is_a_user_error():
    with pytest.raises(UserError, match="no solution"):
        solutions.show("99.9")


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


# --- widgets ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 8, 8, generator=g)
    return x, torch.tensor([0, 1, 2])


def small_model(seed):
    torch.manual_seed(seed)
    return models.build("cnn-w4", 10, in_channels=1).eval()


def test_eps_slider_redraws_the_perturbation(digits):
    x, y = digits
    torch.manual_seed(0)   # the attack's random start
    explorer = lab.EpsExplorer({"a": small_model(0), "b": small_model(1)}, x, y, eps=0.2)
    assert explorer.summary.max_delta == pytest.approx(0.2, abs=1e-6)
    explorer.slider.value = 0.05
    assert explorer.summary.max_delta == pytest.approx(0.05, abs=1e-6)
    assert "= 0.050" in explorer.figure._suptitle.get_text()
    assert explorer.summary.x_adv.min() >= 0 and explorer.summary.x_adv.max() <= 1
    explorer.slider.value = 0.0
    assert explorer.summary.max_delta == 0 and torch.equal(explorer.summary.pred, explorer.summary.pred_adv)


def test_eps_explorer_follows_the_model_and_attack_controls(digits):
    x, y = digits
    explorer = lab.EpsExplorer({"a": small_model(0), "b": small_model(1)}, x, y, eps=0.2)
    with torch.no_grad():
        expected = small_model(1)(x).argmax(1)
    explorer.model.value = "b"
    assert torch.equal(explorer.summary.pred, expected)
    explorer.attack.value = "fgsm"   # one step of size eps from x: every pixel moves by eps or hits 0/1
    delta = explorer.summary.delta.abs()
    assert torch.all(((delta - 0.2).abs() < 1e-6) | (explorer.summary.x_adv == 0) | (explorer.summary.x_adv == 1))


def test_run_button_runs_its_step_only_when_clicked():
    calls = []
    button = lab.RunButton("train", lambda: calls.append(1) or "done")
    assert calls == [] and button.result is None
    button.button.click()
    assert calls == [1] and button.result == "done" and not button.button.disabled


def test_live_curves_redraw_with_each_epoch():
    live = lab.LiveCurves("sat")
    history = []
    for epoch in (1, 2, 3):
        history.append({"epoch": epoch, "lr": 0.1, "loss": 1 / epoch, "ce_adv": 1 / epoch, "val_clean": 50.0,
                        "val_pgd_trades": 10.0 * epoch, "seconds": 0.1})
        live(history)
        loss_ax, clean_ax, robust_ax = live.figure.axes   # figures.training_curves, one run
        assert [line.get_label() for line in loss_ax.lines] == ["ce_adv"]   # the loss is its one term: drawn once
        assert len(loss_ax.lines[0].get_xdata()) == epoch
        assert list(robust_ax.lines[0].get_ydata()) == [10.0 * e for e in range(1, epoch + 1)]
        assert list(clean_ax.lines[0].get_ydata()) == [50.0] * epoch


def test_map_explorer_redraws_the_maps_of_the_chosen_image_attack_and_models(digits):
    x, y = digits
    zoo = {name: (small_model(seed), "cnn-w4") for seed, name in enumerate(("teacher", "rslad", "sat"))}
    explorer = lab.MapExplorer(zoo, x, y, eps=0.2)
    first = explorer.maps["rslad"]["x_adv"][0]
    assert (first - x[0]).abs().max() <= 0.2 + 1e-6
    explorer.image.value = 2   # another image: the maps, and the drawn x', are that image's
    x_adv = explorer.maps["rslad"]["x_adv"][0]
    assert (x_adv - x[2]).abs().max() <= 0.2 + 1e-6 and not torch.equal(x_adv, first)
    drawn = explorer.figure.axes[2].images[0].get_array()   # row 2 (RSLAD), its Grad-CAM panel
    assert torch.allclose(torch.as_tensor(drawn), x_adv[0]) and "image 2" in explorer.figure._suptitle.get_text()
    assert torch.equal(explorer.maps["teacher"]["x_adv"], explorer.maps["rslad"]["x_adv"])   # against the teacher
    explorer.against.value = "each"
    assert not torch.equal(explorer.maps["teacher"]["x_adv"], explorer.maps["rslad"]["x_adv"])
    explorer.shown.value = ("teacher", "sat")
    assert list(explorer.maps) == ["teacher", "sat"] and len(explorer.figure.axes) == 4
    explorer.shown.value = ()
    assert explorer.figure is None


def test_map_explorer_needs_the_teacher(digits):
    with pytest.raises(UserError, match="needs the teacher"):
        lab.MapExplorer({"sat": (small_model(0), "cnn-w4")}, *digits, eps=0.2)


# --- the parameters convention and cached runs ----------------------------------------------------------

def test_setup_checks_the_scale_and_empties_smoke_runs(tmp_path):
    with pytest.raises(UserError, match="unknown SCALE 'cifar'"):
        lab.setup("cifar", runs=tmp_path)
    (tmp_path / "smoke" / "old").mkdir(parents=True)
    (tmp_path / "classroom" / "teacher").mkdir(parents=True)
    lab.setup("smoke", runs=tmp_path, threads=1)
    assert not (tmp_path / "smoke").exists() and (tmp_path / "classroom" / "teacher").is_dir()


def test_lab_configs_follow_the_preset():
    L = lab.Lab("classroom", Path("runs"), data_root="../data")
    assert L.config("sat") == preset("classroom", "sat", data_root="../data")
    assert L.config("rslad").teacher == "teacher" and L.config("sat").teacher is None
    assert L.eps == preset("classroom", "sat").attack.eps
    assert lab.Lab("cifar10", Path("runs")).teacher_spec.startswith("robustbench:")
    assert lab.Lab("classroom", Path("runs"), epochs=3).config("rslad").epochs == 3
    with pytest.raises(UserError, match="unknown method 'rsald'"):
        L.config("rsald")


def test_soft_label_students_differ_only_in_their_soft_labels():
    L = lab.Lab("classroom", Path("runs"))
    runs = L.soft_label_configs()
    assert list(runs) == ["RSL", "NSL", "SSL"] and runs["RSL"] == ("rslad", L.config("rslad"))
    (_, rsl), (_, nsl), (_, ssl) = runs.values()
    assert nsl.teacher == "teacher-natural" and train.needs_teacher(nsl)
    assert ssl.soft_labels == "smooth" and not train.needs_teacher(ssl)
    assert dataclasses.replace(nsl, teacher=rsl.teacher) == rsl
    assert dataclasses.replace(ssl, teacher=rsl.teacher, soft_labels="teacher") == rsl
    assert L.arch("teacher") == L.teacher_config().model and L.arch("sat") == L.config("sat").model
    assert lab.Lab("cifar10", Path("runs")).arch("teacher") == "wrn-34-10"


def test_trained_caches_resumes_and_refuses_other_settings(tmp_path):
    L = lab.setup("smoke", runs=tmp_path, threads=1)
    cfg = L.config("natural", epochs=2)
    out = tmp_path / "smoke" / "natural"

    def stop_after_first_epoch(history):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train.train(cfg, out, progress=False, on_epoch=stop_after_first_epoch)
    assert not runs.is_finished(out)
    L.train(cfg, "natural")                      # resumes the interrupted run
    assert [h["epoch"] for h in runs.history(out)] == [1, 2]
    stamp = (out / "last.pt").stat().st_mtime_ns
    assert not L.train(cfg, "natural").training   # cached: loaded, in eval mode, not retrained
    assert (out / "last.pt").stat().st_mtime_ns == stamp
    with pytest.raises(UserError, match="other settings"):
        L.train(L.config("natural", epochs=2, lr=0.05), "natural")


def test_loss_terms_do_not_step_the_student():
    torch.manual_seed(0)
    student = models.build("cnn-w4", 10, in_channels=1)
    before = [p.detach().clone() for p in student.parameters()]
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    terms = train.loss_terms(student, None, x, y, preset("smoke", "sat"))
    assert set(terms) == {"ce_adv"} and terms["ce_adv"].requires_grad
    assert all(torch.equal(a, b) for a, b in zip(before, student.parameters()))
    assert all(p.grad is None for p in student.parameters())   # nor leave gradients behind


def test_perturbation_is_inside_the_ball(digits):
    x, y = digits
    model = small_model(0)
    p = attacks.perturbation(model, x, y, eps=0.1, attack="pgd_sat")
    assert 0 < p.max_delta <= 0.1 + 1e-6 and p.pred.shape == p.pred_adv.shape == y.shape
    with torch.no_grad():
        assert torch.equal(p.pred_adv, model(p.x_adv).argmax(1))   # predictions on x', not on x
