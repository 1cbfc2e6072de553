"""The notebooks' contract and their widgets, headless.

tests/test_notebooks_run_all.py executes every notebook in smoke mode; these tests check what
that cannot: the committed form of each notebook, and that the widgets' callbacks redraw what they
should when a control changes.
"""

import dataclasses
import json
import math
import re
from pathlib import Path

import pytest
import torch

from rslad_kit import UserError, attacks, lab, losses, models, runs, solutions, train
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
    asked = {key for path in NOTEBOOKS for c in cells(path)
             for key in re.findall(r'solutions\.predict\("([^"]+)"', source(c))}
    assert asked == set(solutions.SOLUTIONS)
    for key in asked:
        notebook = next(p for p in NOTEBOOKS if p.stem.startswith(key.split(".")[0]))
        prompts = "".join(source(c) for c in cells(notebook, "markdown"))
        assert f"Exercise {key}" in prompts, f"{key}: the notebook asks for a prediction first"
    assert not any("solutions.show" in source(c) for path in NOTEBOOKS for c in cells(path)), \
        "an answer reaches the page only through a prediction's reveal"


def test_an_unknown_solution_is_a_user_error():
    with pytest.raises(UserError, match="no solution"):
        solutions.predict("99.9", "?")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_notebook_asks_to_delete_folders_or_interrupt_the_kernel(path):
    text = " ".join(source(c) for c in cells(path, "markdown")).lower()
    assert not re.search(r"delete (the |that )?(folder|`?runs)|interrupt the kernel", text)


# --- predictions that bind, and code that students write -----------------------------------------------

def test_an_answer_waits_for_the_experiment_and_for_a_locked_prediction(monkeypatch):
    monkeypatch.delenv(solutions.AUTO_PREDICT, raising=False)
    displayed = []
    monkeypatch.setattr(solutions, "display", lambda *objs: displayed.extend(objs))
    ask = solutions.predict("04.1", "RSLAD against SAT", ["RSLAD ahead", "tie", "SAT ahead"])
    answer = solutions.SOLUTIONS["04.1"][:40]
    ask.lock()                                   # locked, but no experiment yet: nothing shown
    assert ask.locked == "RSLAD ahead" and ask.input.disabled and displayed == []
    ask.reveal({"RSLAD": 41.0, "SAT": 42.5})
    table = displayed[-1].data
    assert answer in table and "RSLAD ahead" in table and "RSLAD: 41.0; SAT: 42.5" in table

    displayed.clear()
    late = solutions.predict("00.1", "PGD accuracy, %")
    late.reveal(3.0)                             # the experiment ran, no prediction: no answer, a hint
    assert not any(solutions.SOLUTIONS["00.1"][:40] in str(getattr(d, "data", "")) for d in displayed)
    late.input.value = 10.0
    late.button.click()                          # locking in afterwards shows it, under the experiment
    assert late.locked == 10.0 and solutions.SOLUTIONS["00.1"][:40] in displayed[-1].data
    assert "| this run | 3 |" not in displayed[-1].data and "| this run | 3.0 |" in displayed[-1].data


def test_a_button_reveals_its_answer_after_its_step(monkeypatch):
    monkeypatch.setenv(solutions.AUTO_PREDICT, "1")
    events = []
    ask = solutions.predict("05.2", "NSL against RSL", ["NSL below RSL", "about equal"])
    monkeypatch.setattr(ask, "reveal", lambda result: events.append(("reveal", result)))
    button = lab.RunButton("train", lambda: events.append(("step", None)) or "table", reveal=ask)
    assert events == []                          # Run All: nothing until clicked
    button.button.click()
    assert events == [("step", None), ("reveal", "table")]


def pgd_step(model, x, y, eps, step_size):
    x_adv = x.clone().requires_grad_(True)
    grad, = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x_adv), y), x_adv)
    return torch.min(torch.max(x + step_size * grad.sign(), x - eps), x + eps).clamp(0, 1)


def rslad_loss(s_nat, s_adv, t_nat, alpha):
    p_t = torch.softmax(t_nat, dim=1)
    kl = lambda s: torch.nn.functional.kl_div(torch.log_softmax(s, dim=1), p_t, reduction="batchmean")  # noqa: E731
    return (1 - alpha) * kl(s_nat) + alpha * kl(s_adv)


def entropy(p):
    return -(p * p.log()).sum(dim=1)


@pytest.mark.parametrize("name, right, wrong, message", [
    ("pgd_step", pgd_step, lambda m, x, y, eps, step: (x + step * torch.ones_like(x)).clamp(0, 1), "differs at input 0"),
    ("rslad_loss", rslad_loss, lambda s_nat, s_adv, t_nat, alpha: rslad_loss(s_nat, s_adv, t_nat, 1 - alpha),
     "differs at input 0, element ()"),
    ("entropy", entropy, lambda p: -(p * p.log()).sum(dim=0), "differs in shape"),
])
def test_a_code_exercise_is_checked_against_the_kit(name, right, wrong, message, capsys):
    reference = solutions.EXERCISES[name].reference
    assert solutions.check(name, right) is right and "correct" in capsys.readouterr().out
    assert solutions.check(name, wrong) is reference                        # later cells get the kit's
    assert message in capsys.readouterr().out

    def blank(*args):
        ...   # a student's empty cell

    assert solutions.check(name, blank) is reference and "not attempted" in capsys.readouterr().out
    assert solutions.compare(solutions.EXERCISES[name], lambda *a: 1 / 0).startswith("raised ZeroDivisionError")


def test_a_pgd_step_without_its_projection_does_not_pass():
    unprojected = lambda m, x, y, eps, step: pgd_step(m, x, y, eps=1.0, step_size=step)  # noqa: E731
    assert solutions.compare(solutions.EXERCISES["pgd_step"], unprojected).startswith("differs")


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
    assert list(explorer.maps) == ["teacher", "sat"] and len(explorer.figure.axes) == 4 + 1   # and the colour scale
    explorer.shown.value = ()
    assert explorer.figure is None


def test_alpha_slider_redraws_rslads_weighted_terms():
    g = torch.Generator().manual_seed(0)
    s_nat, s_adv, t_nat = (torch.randn(16, 10, generator=g) for _ in range(3))
    explorer = lab.AlphaExplorer(s_nat, s_adv, t_nat)
    kl_nat, kl_adv = (losses.kl(s, torch.softmax(t_nat, 1)).item() for s in (s_nat, s_adv))
    for alpha in (5 / 6, 0.25, 0.0):
        explorer.slider.value = alpha
        assert explorer.terms["kl_nat"] == pytest.approx((1 - alpha) * kl_nat, rel=1e-5)
        assert explorer.terms["kl_adv"] == pytest.approx(alpha * kl_adv, abs=1e-7)
        bars = [b.get_height() for b in explorer.figure.axes[0].patches]
        assert bars == pytest.approx([explorer.terms["kl_nat"], explorer.terms["kl_adv"], kl_nat * (1 - alpha) + kl_adv * alpha])


def test_temperature_and_smoothing_sliders_redraw_the_soft_labels_and_their_entropy():
    t_logits, y = torch.tensor([[4.0, 1.0, 0.0], [0.0, 3.0, 0.5]]), torch.tensor([0, 2])
    explorer = lab.SoftLabelExplorer(t_logits, y, ["a", "b", "c"])
    teacher_h = lambda: next(v for k, v in explorer.entropies.items() if k.startswith("teacher"))  # noqa: E731
    smooth_h = lambda: next(v for k, v in explorer.entropies.items() if k.startswith("smoothing"))  # noqa: E731
    cold = teacher_h()
    explorer.tau.value = 10.0                     # a hot softmax: towards uniform
    assert teacher_h() > cold and teacher_h() < math.log(3)
    explorer.smoothing.value = 0.0                # a one-hot label
    assert smooth_h() == pytest.approx(0.0)
    explorer.smoothing.value = 1.0                # uniform
    assert smooth_h() == pytest.approx(math.log(3))
    explorer.image.value = 1                      # image 1's true class (2) is the one drawn green
    heights = [b.get_height() for b in explorer.figure.axes[1].patches]
    assert heights == pytest.approx([1 / 3] * 3)
    assert explorer.figure.axes[1].patches[2].get_facecolor() != explorer.figure.axes[1].patches[0].get_facecolor()


def test_teacher_picker_shows_the_chosen_rung_and_its_region():
    study = {"attack": "pgd_trades", "underfitting": ["cnn-w4"], "saturation": ["cnn-w32"], "best": "cnn-w16",
             "rows": [{"teacher": t, "params": 1000 * k, "teacher_robust": r, "student_robust": s}
                      for k, (t, r, s) in enumerate([("cnn-w4", 30.0, [35.0, 37.0]), ("cnn-w16", 60.0, [44.0, None]),
                                                     ("cnn-w32", 70.0, [40.0, 42.0])], 1)]}
    picker = lab.TeacherPicker(study)
    assert "| the teacher | 30.0 |" in picker.text and "| teacher − student | -6.0 |" in picker.text
    assert "robust underfitting" in picker.text
    picker.teacher.value = "cnn-w16"
    assert "(1 seed(s), mean) | 44.0 |" in picker.text and "the best teacher" in picker.text
    picker.teacher.value = "cnn-w32"
    assert "robust saturation" in picker.text


def test_one_by_one_counts_what_it_runs(monkeypatch):
    updates = []

    class Handle:
        def update(self, obj):
            updates.append(obj.data)

    monkeypatch.setattr(lab, "display", lambda *a, **k: Handle())
    assert list(lab.one_by_one(["trades", "mart"])) == ["trades", "mart"]
    assert updates == ["*training 1 of 2: trades*", "*training 2 of 2: mart*", "*training: 2 of 2 done*"]
    updates.clear()
    assert list(lab.one_by_one(["rslad"])) == ["rslad"] and updates == []   # nothing to count


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
    assert nsl.teacher == "teacher-natural" and losses.loads_teacher(nsl)
    assert ssl.soft_labels == "smooth" and not losses.loads_teacher(ssl)
    assert dataclasses.replace(nsl, teacher=rsl.teacher) == rsl
    assert dataclasses.replace(ssl, teacher=rsl.teacher, soft_labels="teacher") == rsl
    assert L.arch("teacher") == L.teacher_config().model and L.arch("sat") == L.config("sat").model
    assert lab.Lab("cifar10", Path("runs")).arch("teacher") == "wrn-34-10"


def test_trained_caches_and_resumes(tmp_path):
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
        lab.trained(L.config("natural", epochs=1), out)   # a folder never holds two configs


def test_changing_a_parameter_trains_its_own_run_and_keeps_the_others(tmp_path):
    """No trap between notebooks: a notebook with another EPOCHS trains (or reuses) runs of its own,
    students included, and the default runs stay where the next notebook finds them."""
    full = lab.setup("smoke", runs=tmp_path, threads=1)
    full.train(full.config("rslad"), "rslad")
    short = lab.Lab("smoke", tmp_path, epochs=1)
    short.train(short.config("rslad"), "rslad")
    folders = sorted(p.name for p in (tmp_path / "smoke").iterdir())
    assert len(folders) == 4 and folders[:1] == ["rslad"] and folders[2:3] == ["teacher"]
    (rslad_1,), (teacher_1,) = ([f for f in folders if f.startswith(n + "-")] for n in ("rslad", "teacher"))
    assert [h["epoch"] for h in runs.history(tmp_path / "smoke" / teacher_1)] == [1]
    student = runs.checkpoint_info(tmp_path / "smoke" / rslad_1 / "last.pt")["meta"]["config"]
    assert student["teacher"] == teacher_1 and student["epochs"] == 1   # distilled from its own teacher
    assert full.cached(full.config("rslad"), "rslad") and short.cached(short.config("rslad"), "rslad")
    assert full.folder(full.config("rslad"), "rslad") == tmp_path / "smoke" / "rslad"
    stamp = (tmp_path / "smoke" / "rslad" / "last.pt").stat().st_mtime_ns
    full.train(full.config("rslad"), "rslad")    # back to the default: reused, not retrained
    assert (tmp_path / "smoke" / "rslad" / "last.pt").stat().st_mtime_ns == stamp


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
