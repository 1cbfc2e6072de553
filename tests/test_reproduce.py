"""The main job: the plan end to end in a smoke configuration, the paper's numbers, reruns, and a
method brought by the user."""

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from rslad_kit import report, reproduce, runs, train
from rslad_kit.errors import UserError
from rslad_kit.losses import METHODS, Method, kl
from rslad_kit.plan import Schedule, Task, waves

FIXTURE = Path(__file__).parent / "fixtures" / "paper_tables.txt"
PAPER_ROWS = {"Natural", "SAT", "TRADES", "ARD", "IAD", "RSLAD"}


# --- the paper's numbers ---------------------------------------------------------------------------

def test_paper_numbers_are_the_papers():
    """Every percentage in the paper's Tables 2-7 (copied verbatim into the fixture) is in the package
    data, in the same order; and some cells checked by hand."""
    verbatim = [float(v) for v in re.findall(r"(\d+(?:\.\d+)?)%", FIXTURE.read_text())]
    paper = report.paper_numbers()
    assert len(verbatim) == len(paper) == 378
    assert sorted(verbatim) == sorted(paper.values())
    assert paper[(3, "cifar10", "resnet18", "rslad", "best", "autoattack")] == 51.49
    assert paper[(3, "cifar10", "resnet18", "sat", "last", "pgd_sat")] == 46.22
    assert paper[(4, "cifar100", "mobilenetv2", "sat", "last", "pgd_sat")] == 27.80
    assert paper[(2, "cifar100", "wrn-70-16", "teacher", "best", "cw")] == 42.15
    assert paper[(5, "cifar10", "mobilenetv2", "rslad", "best", "square")] == 56.70
    assert paper[(6, "cifar10", "resnet18", "ard_min+rslad_max", "best", "autoattack")] == 50.35
    assert paper[(7, "cifar10", "resnet18", "nsl", "last", "clean")] == 84.99


# --- the smoke plan end to end ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    return reproduce.run("smoke", out=out, progress=False, workers=2)


def read_table(folder: Path, number: int) -> list[dict]:
    with open(folder / f"table{number}.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_smoke_plan_writes_every_table(smoke):
    folder = smoke
    for number in (2, 3, 5, 6, 7):
        assert (folder / f"table{number}.md").is_file() and (folder / f"table{number}.csv").is_file()
    assert not (folder / "table4.md").exists()
    summary = (folder / "summary.md").read_text()
    claim = next(line for line in summary.splitlines() if "RSLAD beats SAT (PGD_TRADES, best checkpoint)" in line)
    assert "over 2 seeds" in claim   # paired over the smoke preset's two seeds, with its interval
    assert "Table 4 is not part of this preset" in summary


@pytest.mark.slow
def test_table_3_has_every_method_both_checkpoints_and_the_papers_rows(smoke):
    folder = smoke
    rows = read_table(folder, 3)
    ours = {r["row"] for r in rows if r["source"].startswith("ours")}
    assert ours == {"Natural", "SAT", "TRADES", "MART", "ARD", "IAD", "RSLAD"}
    columns = {(r["checkpoint"], r["attack"]) for r in rows}
    assert columns == {(c, a) for c in ("best", "last")
                       for a in ("clean", "fgsm", "pgd_sat", "pgd_trades", "cw", "autoattack")}
    assert all(re.fullmatch(r"\d+\.\d\d ± \d+\.\d\d", r["value"]) for r in rows if r["source"].startswith("ours"))
    # The paper's row sits under ours: RN-18 on CIFAR-10 is the reference for the digits student.
    paper = report.paper_numbers()
    lines = (folder / "table3.md").read_text().splitlines()
    rslad = lines.index(next(line for line in lines if "| RSLAD | ours" in line))
    reference = [float(v) for v in lines[rslad + 1].split("|")[4:-1]]
    assert reference == [paper[(3, "cifar10", "resnet18", "rslad", c, a)] for c in ("best", "last")
                         for a in ("clean", "fgsm", "pgd_sat", "pgd_trades", "cw", "autoattack")]


@pytest.mark.slow
def test_tables_2_5_6_7_have_the_papers_rows(smoke):
    folder = smoke
    def labels(n):   # row labels in order (the CSV has one line per cell)
        return list(dict.fromkeys(r["row"] for r in read_table(folder, n) if r["source"].startswith("ours")))

    assert set(labels(2)) == {"robust teacher", "natural teacher (NSL)", "surrogate (Table 5)"}
    assert set(labels(5)) == {"SAT", "TRADES", "MART", "ARD", "IAD", "RSLAD"}
    assert {r["attack"] for r in read_table(folder, 5)} == {"transfer_pgd", "transfer_cw", "square"}
    assert labels(6) == ["ARD-300", "ARD_min + RSLAD_max", "RSLAD_min + ARD_max", "RSLAD"]
    assert labels(7) == ["SSL", "NSL", "RSL"]
    paper_ssl = [r for r in read_table(folder, 7) if r["source"].startswith("paper")][0]
    assert float(paper_ssl["value"]) == 85.67


@pytest.mark.slow
def test_every_run_records_its_provenance(smoke):
    folder = smoke
    configs = list((folder / "runs").glob("*/config.json"))
    assert len(configs) == len(reproduce.build_plan("smoke").runs)
    meta = json.loads(configs[0].read_text())
    for key in ("config", "seed", "kit_version", "git_commit", "torch_version", "device"):
        assert key in meta
    evals = json.loads(next((folder / "evals").glob("*.json")).read_text())
    assert {"kit_version", "torch_version", "device", "n", "eps"} <= set(evals["provenance"])


@pytest.mark.slow
def test_a_rerun_skips_finished_work(smoke, monkeypatch):
    folder = smoke

    def must_not_run(*args, **kwargs):
        raise AssertionError("finished work was redone")

    monkeypatch.setattr(train, "train", must_not_run)
    monkeypatch.setattr(reproduce.evaluate_lib, "evaluate", must_not_run)
    reproduce.run("smoke", out=folder.parent, progress=False, workers=1)


@pytest.mark.slow
def test_an_interrupted_run_resumes(smoke, monkeypatch):
    folder = smoke
    run = folder / "runs" / "cnn-w4-sat-s1"
    for name in ("last.pt", "best.pt"):
        (run / name).unlink()
    (folder / "evals" / "cnn-w4-sat-s1.json").unlink()

    real_step, calls = train.train_step, []

    def interrupted_in_epoch_2(*args, **kwargs):
        if kwargs["epoch"] == 2:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train, "train_step", interrupted_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        reproduce.run("smoke", out=folder.parent, progress=False, workers=1)
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 1

    real_train = train.train
    monkeypatch.setattr(train, "train_step", real_step)
    monkeypatch.setattr(train, "train", lambda *a, **k: calls.append(k["resume"]) or real_train(*a, **k))
    reproduce.run("smoke", out=folder.parent, progress=False, workers=1)
    assert calls == [True]
    assert runs.is_finished(run)


# --- bring your own method -------------------------------------------------------------------------

def rslad_plus_ce(s_nat, s_adv, t_nat, y, alpha=5 / 6, gamma=0.5):
    """A researcher's variant: RSLAD's two KL terms plus gamma * CE(S(x'), y)."""
    p_t = F.softmax(t_nat, dim=1)
    return {
        "kl_nat": (1 - alpha) * kl(s_nat, p_t),
        "kl_adv": alpha * kl(s_adv, p_t),
        "ce_adv": gamma * F.cross_entropy(s_adv, y),
    }


@pytest.mark.slow
def test_a_method_defined_outside_the_package_goes_through_every_table(tmp_path, monkeypatch):
    monkeypatch.setitem(METHODS, "rslad+ce", Method(rslad_plus_ce, attack="kl_teacher"))
    folder = reproduce.run("smoke", out=tmp_path, progress=False, seeds=1)
    for number in (3, 5, 6):
        assert "rslad+ce" in {r["row"] for r in read_table(folder, number)}, number
    assert {"SSL (rslad+ce)", "NSL (rslad+ce)", "RSL (rslad+ce)"} <= {r["row"] for r in read_table(folder, 7)}
    assert "RSLAD beats rslad+ce" in (folder / "summary.md").read_text()


# --- the command line ------------------------------------------------------------------------------

def test_dry_run_prints_the_plan_and_its_cost_and_writes_nothing(tmp_path):
    result = subprocess.run([sys.executable, "-m", "rslad_kit.cli", "--threads", "1", "reproduce", "--preset",
                             "classroom", "--out", str(tmp_path / "r"), "--dry-run"],
                            capture_output=True, text=True, check=True)
    assert "training runs" in result.stdout and "estimated" in result.stdout
    assert "cnn-w4-rslad-s2" in result.stdout
    assert not (tmp_path / "r").exists()


def test_unknown_preset_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "rslad_kit.cli", "reproduce", "--preset", "imagenet",
                             "--out", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 2 and "unknown preset 'imagenet'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_table_6_uses_rslads_schedule_and_swaps_the_halves():
    plan = reproduce.build_plan("cifar10")
    ard_300 = plan.runs[plan.rows[(6, "resnet18", "ard-300")][0]]
    hybrid = plan.runs[plan.rows[(6, "resnet18", "ard_min+rslad_max")][0]]
    rslad = plan.runs[plan.rows[(3, "resnet18", "rslad")][0]]
    assert ard_300.epochs == hybrid.epochs == rslad.epochs == 300
    assert (hybrid.method, hybrid.objective, hybrid.attack) == ("ard", "kl_teacher", rslad.attack)
    assert plan.rows[(6, "resnet18", "rslad")] == plan.rows[(3, "resnet18", "rslad")]  # the same run
    other = plan.runs[plan.rows[(6, "resnet18", "rslad_min+ard_max")][0]]
    assert (other.method, other.objective, other.attack.bn_mode) == ("rslad", "ce", "train")


def test_the_classroom_budget_and_full():
    plan = reproduce.build_plan("classroom")
    s = plan.plan.students[0]
    slow = {(run, ckpt) for run, ckpts in plan.evaluations.items() for ckpt, attacks in ckpts.items()
            if "autoattack" in attacks or "square" in attacks}
    assert (f"{s}-rslad-s0", "best") in slow and (f"{s}-rslad-s0", "last") not in slow
    assert ("teacher", "best") in slow
    assert not any(run.endswith(("-s1", "-s2")) for run, _ in slow)
    assert f"{s}-rslad-s2" in plan.runs and f"{s}-ard_min+rslad_max-s1" not in plan.runs  # Table 6: first seed
    assert f"{s}-rslad-ssl-s2" in plan.runs and f"{s}-rslad-nsl-s2" in plan.runs        # Table 7: every seed
    assert all(plan.runs[r].attack.steps == 5 for r in plan.runs if r.startswith(s))

    full = reproduce.build_plan("classroom", full=True)
    assert f"{s}-ard_min+rslad_max-s2" in full.runs
    assert {"autoattack"} <= full.evaluations[f"{s}-sat-s2"]["last"]


def test_the_presets_note_opens_the_summary(tmp_path):
    """The classroom's note (what digits can and cannot show) is printed at the top of its summary."""
    plan = reproduce.build_plan("classroom", out=tmp_path)
    assert "not the paper's" in plan.plan.note
    plan.out.mkdir(parents=True)   # a folder reproduce has started: no results in it yet
    report.write(plan)
    summary = (tmp_path / "classroom" / "summary.md").read_text()
    assert plan.plan.note in summary
    assert summary.index(plan.plan.note) < summary.index("## Students ranked")
    assert not reproduce.build_plan("smoke", out=tmp_path).plan.note


def test_the_summary_lists_each_masking_check_and_where_it_fired(tmp_path):
    plan = reproduce.build_plan("smoke", tmp_path)
    honest = {"clean": 90.0, "fgsm": 50.0, "pgd_sat": 40.0, "pgd_trades": 41.0, "cw": 39.0, "pgd_large_eps": 0.0}
    evals = {"teacher": {"best": honest, "provenance": {"n": 100}},
             "cnn-w4-sat-s0": {"best": honest | {"pgd_large_eps": 80.0}, "last": honest | {"fgsm": 20.0}}}
    (plan.out / "evals").mkdir(parents=True)
    for run, entry in evals.items():
        (plan.out / "evals" / f"{run}.json").write_text(json.dumps(entry))
    lines = report.masking(plan)
    assert lines == [
        "- one-step FGSM more than 1 point below the better PGD: fired on 1 of 3 checkpoint(s)",
        "  - cnn-w4-sat-s0 (last): one-step FGSM 20.0% vs PGD (pgd_sat 40.0%), flagged more than 1 point below: "
        "gradient masking suspected",
        "- above 10% accuracy under PGD at eps 0.5: fired on 1 of 3 checkpoint(s)",
        "  - cnn-w4-sat-s0 (best): PGD at eps 0.5 leaves 80.0% accuracy, flagged above 10% (any image can become "
        "mid-grey there): gradient masking suspected"]
    report.write(plan)
    assert "\n".join(lines) in (plan.out / "summary.md").read_text()


def test_tasks_that_wait_on_each_other_stop_with_a_clear_error(tmp_path, monkeypatch):
    tasks = [Task("a", "train", needs=("b",)), Task("b", "train", needs=("a",)), Task("c", "train")]
    with pytest.raises(UserError, match="wait on each other in a cycle: a, b"):
        waves(tasks)
    schedule = Schedule(tasks)
    assert [t.name for t in schedule.ready()] == ["c"]
    schedule.start(tasks[2])
    assert schedule.ready() == []   # c still runs: a and b may wait for it
    schedule.finish(tasks[2])
    with pytest.raises(UserError, match="cycle: a, b"):
        schedule.ready()
    plan = reproduce.build_plan("smoke", tmp_path, tables=(3,))
    monkeypatch.setattr(plan, "tasks", lambda: tasks)
    with pytest.raises(UserError, match="cycle"):   # before anything runs, instead of waiting forever
        reproduce.execute(plan, workers=1, progress=False)
    assert not plan.run_dir("c").exists()


def test_a_task_is_done_when_its_result_is_on_disk(tmp_path):
    plan = reproduce.build_plan("smoke", tmp_path, tables=(3,))
    task = next(t for t in plan.tasks() if t.name == "eval:teacher")
    assert plan.eval_file("teacher") == tmp_path / "smoke" / "evals" / "teacher.json"
    assert not plan.is_done(task)
    plan.evals_dir.mkdir(parents=True)
    runs.write_text(plan.eval_file("teacher"), json.dumps({c: dict.fromkeys(a, 50.0)
                                                           for c, a in task.checkpoints.items()}))
    assert plan.is_done(task)


def test_a_warning_in_a_worker_process_is_one_line_too(capfd):
    """Tasks run in spawned workers, which do not inherit the command line's warning format: without
    the worker's own, a masking check's warning would print as raw `file.py:N: UserWarning:` lines
    through the progress bars."""
    import multiprocessing
    import warnings
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context, initializer=reproduce._worker_init,
                             initargs=(context.RLock(), context.Value("i", 0))) as pool:
        pool.submit(warnings.warn, "AutoAttack 10 points below PGD: gradient masking suspected").result()
    err = capfd.readouterr().err
    assert "rslad-kit: warning: AutoAttack 10 points below PGD: gradient masking suspected\n" in err
    assert "UserWarning" not in err
