"""The teacher-choice study (Figure 4): its ladders, and the smoke study end to end through the CLI,
cached so that a rerun trains nothing."""

import dataclasses
import json

import pytest

from rslad_kit import config, teacher_study
from rslad_kit.cli import main
from rslad_kit.errors import UserError


def test_the_classroom_ladder_starts_at_the_presets_student_and_widens(monkeypatch):
    student = config.PRESETS["classroom"].plan.students[0]
    lad = teacher_study.ladder("classroom")
    assert lad.teachers[0] == student and len(lad.teachers) == len(teacher_study.WIDTH_STEPS["classroom"])
    assert lad.seeds == 3 and lad.attack == "pgd_trades"

    # the lead may change the classroom student: the ladder follows it
    p = config.PRESETS["classroom"]
    monkeypatch.setitem(config.PRESETS, "classroom",
                        dataclasses.replace(p, plan=dataclasses.replace(p.plan, students=("cnn-w2",))))
    assert teacher_study.ladder("classroom").teachers == ("cnn-w2", "cnn-w4", "cnn-w8", "cnn-w16")


def test_the_cifar10_ladder_is_the_papers_six_teachers():
    plan, lad = teacher_study.build_plan("cifar10", "results")
    assert lad.attack == "autoattack"
    assert [t.removeprefix("robustbench:") for t in lad.teachers] == [
        "resnet18", "resnet34", "resnet50", "wrn-34-10", "Gowal2020Uncovering_34_20", "Gowal2020Uncovering_70_16"]
    kit_trained = [name for name, cfg in plan.runs.items() if name.startswith("teacher-")]
    assert kit_trained == ["teacher-resnet18", "teacher-resnet34", "teacher-resnet50", "teacher-wrn-34-10"]
    assert all(plan.runs[name].method == "trades" for name in kit_trained)
    assert sorted(plan.zoo) == ["teacher-Gowal2020Uncovering_34_20", "teacher-Gowal2020Uncovering_70_16"]
    students = [cfg for name, cfg in plan.runs.items() if "-rslad-" in name]
    assert len(students) == 6 and {cfg.model for cfg in students} == {"resnet18"}
    assert all(set(ckpts["best"]) == {"clean", "autoattack"} for ckpts in plan.evaluations.values())


def test_unknown_preset_is_refused():
    with pytest.raises(UserError, match="no teacher ladder for preset 'cifar100'"):
        teacher_study.ladder("cifar100")


@pytest.mark.slow
def test_smoke_study_end_to_end_and_cached(tmp_path, capsys):
    assert main(["--threads", "1", "teacher-study", "--preset", "smoke", "--out", str(tmp_path)]) == 0
    stdout = capsys.readouterr().out
    folder = tmp_path / "smoke-teacher-study"
    data = json.loads((folder / "teacher_study.json").read_text())
    lad = teacher_study.ladder("smoke")
    assert [r["teacher"] for r in data["rows"]] == list(lad.teachers)
    for row in data["rows"]:
        assert 0 <= row["teacher_robust"] <= row["teacher_clean"] <= 100
        assert len(row["student_robust"]) == lad.seeds and all(0 <= v <= 100 for v in row["student_robust"])
    assert len(data["sat_robust"]) == lad.seeds and data["attack"] == "pgd_trades"
    assert data["summary"] in stdout and data["summary"] in (folder / "summary.md").read_text()
    assert (folder / "figure4_teacher_study.png").is_file() and (folder / "figure4_teacher_study.pdf").is_file()

    checkpoints = sorted(folder.glob("runs/*/last.pt"))
    assert len(checkpoints) == 2 * len(lad.teachers) + 1   # teachers, students, the SAT baseline
    stamps = [p.stat().st_mtime_ns for p in checkpoints]
    teacher_study.run("smoke", out=tmp_path, progress=False)   # finished: nothing is retrained
    assert [p.stat().st_mtime_ns for p in checkpoints] == stamps
