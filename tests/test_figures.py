"""Every figure renders with the expected panels, titles and axis labels; `rslad-kit figures` writes
every file from a finished smoke `reproduce` folder and refuses an unfinished one in one line."""

import json
import shutil

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from rslad_kit import data, evaluate, figures, models, reproduce, saliency, soft_labels, teacher_study  # noqa: E402
from rslad_kit.cli import main  # noqa: E402
from rslad_kit.config import preset  # noqa: E402


def titles(fig):
    return [ax.get_title() for ax in fig.axes]


def rendered(fig):
    fig.canvas.draw()   # layout and text placement run here: a broken figure raises
    return fig


# --- each figure function on tiny data -------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny():
    """A few 8x8 digits-like images, two untrained models' maps, and their adversarial examples."""
    torch.manual_seed(0)
    x, y = torch.rand(6, 1, 8, 8), torch.tensor([0, 1, 2, 3, 3, 8])
    nets = {name: models.build("cnn-w4", 10, in_channels=1).eval() for name in ("teacher", "ard", "rslad")}
    maps = {name: saliency.adversarial_maps(net, "cnn-w4", x, y, eps=0.2, samples=3) for name, net in nets.items()}
    return x, y, nets, maps


def test_attention_maps_has_a_row_per_model_and_two_maps_per_image(tiny):
    _, _, _, maps = tiny
    fig = rendered(figures.attention_maps(maps, images=3))
    assert len(fig.axes) == 3 * 6 + 1   # and the colour scale
    assert titles(fig)[:6] == ["Grad-CAM (image 1)", "SmoothGrad (image 1)", "Grad-CAM (image 2)",
                               "SmoothGrad (image 2)", "Grad-CAM (image 3)", "SmoothGrad (image 3)"]
    assert [fig.axes[6 * r].get_ylabel() for r in range(3)] == ["Teacher", "ARD", "RSLAD"]
    panel = fig.axes[1]   # SmoothGrad over the adversarial image, both on one [0, 1] scale
    assert torch.allclose(torch.as_tensor(panel.images[0].get_array()), maps["teacher"]["x_adv"][0, 0])
    assert panel.images[1].get_clim() == (0, 1) and panel.images[1].get_array().max() == pytest.approx(1)
    assert "influence" in fig.axes[-1].get_ylabel()


def test_map_similarity_has_one_bar_per_student_in_each_map_panel(tiny):
    _, _, _, maps = tiny
    rows = saliency.similarity_rows({"ard": [maps["ard"]], "rslad": [maps["rslad"], maps["rslad"]]},
                                    maps["teacher"])
    assert [(r["student"], r["map"], r["seeds"]) for r in rows] == [
        ("ard", "gradcam", 1), ("ard", "smoothgrad", 1), ("rslad", "gradcam", 2), ("rslad", "smoothgrad", 2)]
    fig = rendered(figures.map_similarity(rows))
    assert titles(fig) == ["Grad-CAM", "SmoothGrad"]
    differences = saliency.paired_differences(rows, "rslad", ("ard",))   # one seed shared: no interval
    assert [(d["map"], d["seeds"], d["low"]) for d in differences] == [("gradcam", 1, None), ("smoothgrad", 1, None)]
    with_differences = rendered(figures.map_similarity(rows, differences))
    assert len(with_differences.axes) == 4 and with_differences.axes[2].get_ylabel() == "paired difference in ρ"
    assert [t.get_text() for t in with_differences.axes[2].get_xticklabels()] == ["RSLAD − ARD"]
    assert fig.axes[0].get_ylabel() == "Spearman ρ with the teacher"
    assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == ["ARD", "RSLAD"]
    assert len(fig.axes[0].patches) == 2


def test_soft_labels_has_a_panel_per_class_and_type_with_its_statistics(tiny):
    x, y, nets, _ = tiny
    probs = soft_labels.soft_label_sets(nets["teacher"], nets["ard"], x, y, preset("smoke"), 10)
    assert set(probs) == {"RSL", "NSL", "SSL"}
    assert torch.allclose(probs["SSL"][0].max(), torch.tensor(0.9 + 0.1 / 10))   # (1 - s) + s / C, s = 0.1
    stats = soft_labels.soft_label_class_stats(probs, y, (3, 8))
    fig = rendered(figures.soft_labels(probs, y, (3, 8), [str(c) for c in range(10)], stats))
    assert len(fig.axes) == 6
    assert titles(fig)[0].startswith("RSL, class 3\nH = ") and "p(true) = " in titles(fig)[0]
    assert titles(fig)[5].startswith("SSL, class 8")
    assert fig.axes[0].get_ylabel() == "probability"
    assert fig.get_suptitle().endswith("on test images")

    # beside augmented training views, which the panel titles and the title name
    views = data.augment(x, padding=1, flip=False, generator=torch.Generator().manual_seed(0))
    train_probs = soft_labels.soft_label_sets(nets["teacher"], nets["ard"], views, y, preset("smoke"), 10)
    both = rendered(figures.soft_labels(probs, y, (3, 8), [str(c) for c in range(10)], stats,
                                        training=(train_probs, y, soft_labels.soft_label_class_stats(train_probs, y, (3, 8)))))
    assert titles(both)[0].split("\n")[1].startswith("training views: H = ")
    assert titles(both)[0].split("\n")[2].startswith("test images: H = ")
    assert both.get_suptitle().endswith("on training views (hatched) and test images")


def study(student_robust, teacher_robust, sat=30.0):
    rows = [{"teacher": f"t{i}", "params": 1000 * 4 ** i, "teacher_clean": 90.0, "teacher_robust": t,
             "student_clean": [80.0] * len(s), "student_robust": s}
            for i, (s, t) in enumerate(zip(student_robust, teacher_robust))]
    data = {"preset": "x", "dataset": "digits", "student": "cnn-w4", "eps": 0.2, "attack": "pgd_trades",
            "seeds": len(student_robust[0]), "rows": rows, "sat_robust": [sat] * len(student_robust[0])}
    return data | teacher_study.verdict(data)


def test_teacher_study_figure_marks_the_regions_and_says_what_it_shows():
    data = study([[40, 42, 41], [48, 50, 49], [43, 44, 43], [38, 40, 39]], [20, 47, 55, 60])
    assert data["rise_and_fall"] and data["best"] == "t1"
    assert data["underfitting"] == ["t0"] and data["saturation"] == ["t2", "t3"]
    fig = rendered(figures.teacher_study(data))
    ax = fig.axes[0]
    assert ax.get_ylabel().startswith("PGD_TRADES accuracy (%)")
    assert ax.get_xlabel() == "teacher (parameters)"
    assert "rise and fall beyond the seed noise, as in the paper" in fig.get_suptitle()
    assert {"teacher", "RSLAD student", "SAT student", "robust underfitting", "robust saturation"} <= {
        t.get_text() for t in ax.get_legend().get_texts()}

    flat = study([[40, 41], [45, 46], [50, 51]], [50, 55, 60])   # keeps rising: not the paper's shape
    assert not flat["rise_and_fall"] and "no rise and fall (unlike the paper)" in flat["summary"]
    fig = rendered(figures.teacher_study(flat))
    assert "peaks at t2, the largest teacher: no rise and fall" in fig.get_suptitle()
    assert "robust saturation" not in {t.get_text() for t in fig.axes[0].get_legend().get_texts()}

    # a peak inside the ladder that the seeds cannot tell from its neighbours is not the paper's shape
    noisy = study([[40, 30], [48, 34], [45, 33]], [35, 47, 55])
    assert noisy["best"] == "t1" and not noisy["rise_and_fall"]
    assert "not beyond the seed noise" in noisy["summary"]

    one_seed = study([[40], [48], [38]], [35, 47, 55])   # the paper's shape, but one seed cannot show it
    assert "signs only (one seed)" in rendered(figures.teacher_study(one_seed)).get_suptitle()
    assert not one_seed["saturation"] and "paper" not in one_seed["headline"]


def test_autoattack_studies_say_so_on_the_axis():
    data = study([[40], [45]], [50, 55]) | {"attack": "autoattack"}
    assert figures.teacher_study(data).axes[0].get_ylabel().startswith("AutoAttack accuracy (%)")


def test_training_curves_show_each_runs_loss_terms_and_overlay_validation():
    runs = {f"cnn-w4-{m}-s0": [{"epoch": e, "lr": 0.1, "loss": 2.0 / e, "kl": 1.0 / e, "val_clean": 50.0 + e,
                         "val_pgd_trades": 20.0 + e, "seconds": 1.0} for e in (1, 2, 3)] for m in ("sat", "rslad")}
    fig = rendered(figures.training_curves(runs))
    assert titles(fig) == ["cnn-w4-sat-s0: loss terms", "cnn-w4-rslad-s0: loss terms", "validation: clean",
                           "validation: PGD_TRADES"]
    assert [ax.get_xlabel() for ax in fig.axes] == ["epoch"] * 4
    assert [line.get_label() for line in fig.axes[1].lines] == ["kl"]   # one term: the loss is that term
    assert len(fig.axes[3].lines) == 2 and fig.axes[3].lines[1].get_color() == figures.COLORS["rslad"]
    two_terms = [{"epoch": 1, "loss": 3.0, "kl_nat": 1.0, "kl_adv": 2.0}]
    two = rendered(figures.training_curves({"rslad": two_terms}))
    assert [line.get_label() for line in two.axes[0].lines] == ["loss", "kl_nat", "kl_adv"]


def test_robust_vs_clean_has_a_point_per_method_with_seed_error_bars():
    fig = rendered(figures.robust_vs_clean({"sat": {"clean": [80, 82], "robust": [30, 31]},
                                            "rslad": {"clean": [78, 79], "robust": [35, 36]}}))
    ax = fig.axes[0]
    assert ax.get_xlabel() == "clean accuracy (%)" and ax.get_ylabel() == "PGD_TRADES accuracy (%)"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["SAT (n=2)", "RSLAD (n=2)"]


def test_adversarial_examples_grid(tiny):
    x, y, nets, maps = tiny
    preds = {name: net(maps["teacher"]["x_adv"]).argmax(1) for name, net in nets.items()}
    fig = rendered(figures.adversarial_examples(x[:3], maps["teacher"]["x_adv"][:3], y[:3], preds,
                                                [str(c) for c in range(10)], eps=0.2))
    assert len(fig.axes) == 3 * 4
    assert titles(fig)[:4] == ["x", "x' - x (amplified)", "x'", "prediction on x'"]
    assert "Teacher: " in fig.axes[3].texts[0].get_text()


def test_eps_curves(tiny):
    x, y, nets, _ = tiny
    grid = [0, 0.1, 0.2]
    curves = {name: evaluate.eps_curve(net, (x, y), grid) for name, net in nets.items()}
    assert all(len(c) == 3 for c in curves.values())
    fig = rendered(figures.eps_curves(grid, curves, train_eps=0.2))
    ax = fig.axes[0]
    assert ax.get_xlabel() == "eps (pixel scale [0, 1])" and ax.get_ylabel() == "PGD_TRADES accuracy (%)"
    assert len(ax.lines) == 4   # three models and the training eps


def test_every_method_keeps_its_colour():
    assert figures.color("rslad") == figures.COLORS["rslad"] != figures.color("ard")
    assert figures.color("my-method") in figures._PALETTE   # a new method: a colour of the palette


# --- `rslad-kit figures` on a finished smoke plan --------------------------------------------------

EXPECTED = [f"{name}.{ext}" for name in ("figure2_attention", "figure2_similarity", "figure3_soft_labels",
                                         "training_curves", "robust_vs_clean", "adversarial_examples",
                                         "eps_curves", "figure4_teacher_study") for ext in ("png", "pdf")] + [
    "figure2_similarity.json", "figure2_similarity.md", "figure3_soft_labels.json", "eps_curves.json"]


def cli(capsys, *args):
    """`rslad-kit ARGS` in this process: (exit code, stdout, stderr)."""
    code = main(["--threads", "1", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory):
    """The smoke plan's Tables 3 and 7 (every method, the natural teacher, 2 seeds), evaluated with the
    two attacks the figures read: a reproduce folder as the figures see it, without AutoAttack's cost."""
    plan = reproduce.build_plan("smoke", tmp_path_factory.mktemp("results"), tables=(3, 7))
    for checkpoints in plan.evaluations.values():
        for attacks in checkpoints.values():
            attacks &= {"clean", "pgd_trades"}
    reproduce.execute(plan, workers=2, progress=False)
    return plan.out


@pytest.mark.slow
def test_figures_command_writes_every_figure_and_the_similarity_table(smoke_results, tmp_path, capsys):
    # a finished teacher study beside the results folder adds Figure 4
    study_folder = smoke_results.parent / "smoke-teacher-study"
    study_folder.mkdir()
    (study_folder / "teacher_study.json").write_text(json.dumps(study([[40], [45]], [50, 55])))
    out = tmp_path / "figs"
    try:
        code, _, err = cli(capsys, "figures", "--results", str(smoke_results), "--out", str(out), "--images", "60")
    finally:
        shutil.rmtree(study_folder)   # other tests see the results folder alone
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == sorted(EXPECTED)
    similarity = json.loads((out / "figure2_similarity.json").read_text())
    assert similarity["images"] == 60 and similarity["seeds"] == [0, 1] and similarity["against"] == "teacher"
    roles = {"random-init": "floor", "natural": "floor", "teacher-reseeded": "ceiling"}
    assert {(r["student"], r["map"], r["role"]) for r in similarity["rows"]} == {
        (m, k, roles.get(m, "student")) for m in (*figures.SALIENCY_METHODS, *roles) for k in ("gradcam", "smoothgrad")}
    assert all(-1 <= r["mean"] <= 1 and r["seeds"] == (1 if r["role"] == "ceiling" else 2) for r in similarity["rows"])
    assert [(d["minus"], d["seeds"]) for d in similarity["differences"] if d["map"] == "gradcam"] == [
        ("ard", 2), ("iad", 2), ("sat", 2)]
    assert "| RSLAD − ARD | Grad-CAM |" in (out / "figure2_similarity.md").read_text()
    soft = json.loads((out / "figure3_soft_labels.json").read_text())
    assert soft["classes"] == ["3", "8"] and set(soft["stats"]) == set(soft["stats_train_views"]) == {"RSL", "NSL", "SSL"}
    assert soft["images"]["train"].startswith("the first 360 training images, one augmented view each")


def test_figures_on_an_unfinished_folder_names_the_command_to_run(tmp_path, capsys):
    (tmp_path / "smoke").mkdir()
    code, _, err = cli(capsys, "figures", "--results", str(tmp_path / "smoke"), "--out", str(tmp_path / "figs"))
    assert code == 2
    assert err.count("\n") == 1 and "is missing" in err
    assert f"rslad-kit reproduce --preset smoke --out {tmp_path}" in err
    assert not (tmp_path / "figs").exists()   # nothing half-written


def test_figures_on_a_folder_that_is_not_a_results_folder(tmp_path, capsys):
    code, _, err = cli(capsys, "figures", "--results", str(tmp_path), "--out", str(tmp_path / "figs"))
    assert code == 2 and "is not a `reproduce` results folder" in err


def test_figures_needs_a_few_images(tmp_path, capsys):
    code, _, err = cli(capsys, "figures", "--results", str(tmp_path / "smoke"), "--out", str(tmp_path), "--images", "1")
    assert code == 2 and "--images must be at least 2" in err
