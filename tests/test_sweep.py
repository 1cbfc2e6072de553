"""`rslad-kit sweep`: a plan's tasks as submitit jobs (the local executor: processes on this machine)."""

import contextlib
import os
import types

import pytest
import submitit

from rslad_kit import UserError, reproduce, runs, sweep, teacher_study


@pytest.fixture
def plan(tmp_path):
    """The smoke plan cut to one teacher-free run and one cheap evaluation: the dispatch, not the work."""
    plan = reproduce.build_plan("smoke", tmp_path, seeds=1, tables=(3,), methods=("natural",))
    plan.runs = {name: cfg for name, cfg in plan.runs.items() if name == "cnn-w4-natural-s0"}
    plan.evaluations = {"cnn-w4-natural-s0": {"best": {"clean"}}}
    return plan


def test_local_jobs_run_the_plan_in_dependency_order_and_skip_finished_work(plan):
    ex = sweep.executor("local", plan.out / "submitit", timeout_min=5)
    assert sweep.dispatch(plan, ex, progress=False) == ["cnn-w4-natural-s0", "eval:cnn-w4-natural-s0"]
    assert runs.is_finished(plan.out / "runs" / "cnn-w4-natural-s0")
    assert (plan.out / "evals" / "cnn-w4-natural-s0.json").is_file()
    assert sweep.dispatch(plan, ex, progress=False) == []


def test_the_teacher_ladder_sweeps_through_the_same_jobs_and_writes_its_summary(tmp_path, monkeypatch):
    """A ladder cut to its smallest teacher: the dispatch and the study's files, not the study's work."""
    build = teacher_study.build_plan

    def one_teacher(p, out, **kwargs):
        plan, lad = build(p, out, **kwargs)
        first = teacher_study.teacher_run(lad.teachers[0])
        plan.runs = {first: plan.runs[first]}
        plan.evaluations = {first: {"best": {"clean"}}}
        return plan, lad

    monkeypatch.setattr(teacher_study, "build_plan", one_teacher)
    folder = sweep.run("smoke", out=tmp_path, study="teacher", kind="local", progress=False)
    assert folder == tmp_path / "smoke-teacher-study"
    assert runs.is_finished(folder / "runs" / "teacher-cnn-w4")
    assert "unfinished" in (folder / "summary.md").read_text()   # the students were cut from the plan
    with pytest.raises(UserError, match="unknown study"):
        sweep.run("smoke", out=tmp_path, study="ladder")


def test_a_preempted_job_is_requeued_with_the_same_task(plan):
    task = plan.tasks()[0]
    resubmission = sweep.Job().checkpoint(task, plan, 1)
    assert isinstance(resubmission, submitit.helpers.DelayedSubmission)
    assert resubmission.args == (task, plan, 1)


def test_students_wait_for_their_teacher():
    plan = reproduce.build_plan("smoke", seeds=1, tables=(3,), methods=("rslad",))
    waves = [[t.name for t in wave] for wave in sweep.waves(plan.tasks())]
    first = waves.index(next(w for w in waves if "teacher" in w))
    assert any("cnn-w4-rslad-s0" in w for w in waves[first + 1:])


def test_unknown_executor_is_one_line(tmp_path):
    with pytest.raises(UserError, match="unknown executor"):
        sweep.executor("kubernetes", tmp_path, timeout_min=1)


def test_cli_sweep_with_an_unknown_executor_is_one_line_and_writes_nothing(tmp_path, capsys):
    from rslad_kit import cli

    code = cli.main(["sweep", "--preset", "smoke", "--executor", "kubernetes", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "unknown executor" in err and len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_slurm_jobs_get_the_partition_time_limit_and_one_gpu(tmp_path, monkeypatch):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\n")
    (fake / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    ex = sweep.executor("slurm", tmp_path / "logs", timeout_min=90, partition="gpu", gpus=1, cpus=4, parallel=16)
    params = ex._executor.parameters   # what submitit writes into the sbatch file
    assert params["partition"] == "gpu" and params["time"] == 90 and params["gpus_per_node"] == 1
    assert params["cpus_per_task"] == 4 and params["array_parallelism"] == 16


def test_slurm_without_slurm_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UserError, match="srun not found"):
        sweep.executor("slurm", tmp_path, timeout_min=1)


# --- GPUs for local jobs ---------------------------------------------------------------------------

def test_local_jobs_use_every_visible_gpu_by_default(monkeypatch):
    monkeypatch.setattr(sweep.gpu, "gpu_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")   # what Slurm or a shared node handed this process
    assert sweep.local_gpus(None) == sweep.local_gpus(1) == ["3", "5"]
    assert sweep.local_gpus(0) == []                  # asked for the CPU
    with pytest.raises(UserError, match="a local job trains on one GPU"):
        sweep.local_gpus(2)
    monkeypatch.setattr(sweep.gpu, "gpu_count", lambda: 0)
    assert sweep.local_gpus(None) == []
    with pytest.raises(UserError, match="no GPU is visible"):
        sweep.local_gpus(1)


class RecordingExecutor:
    """Stands in for submitit's local executor: records which GPU each job was started on."""

    cluster = "local"

    def __init__(self):
        self.setup, self.started = None, []

    def update_parameters(self, **params):
        self.setup = params["local_setup"]

    @contextlib.contextmanager
    def batch(self):
        yield

    def submit(self, job, task, plan, threads):
        self.started.append((task.name, self.setup))
        return types.SimpleNamespace(result=lambda: task.name)


def test_local_jobs_running_together_start_on_different_gpus(tmp_path):
    plan = reproduce.build_plan("smoke", tmp_path, seeds=3, tables=(3,), methods=("natural",))
    ex = RecordingExecutor()
    sweep.dispatch(plan, ex, parallel=3, progress=False, devices=["3", "5"])
    gpus = [setup[0].removeprefix("export CUDA_VISIBLE_DEVICES=") for _, setup in ex.started]
    # each wave goes out in chunks of 3 jobs that run together; each chunk starts again at the first GPU
    sizes = [len(w[start:start + 3]) for w in sweep.waves(plan.tasks()) for start in range(0, len(w), 3)]
    assert len(sizes) > 2 and max(sizes) == 3
    assert gpus == [["3", "5"][i % 2] for size in sizes for i in range(size)]


def test_a_local_job_starts_with_the_gpu_it_was_given(tmp_path):
    """The real local executor: the setup line runs before the job's Python (and so before CUDA) starts."""
    ex = sweep.executor("local", tmp_path, timeout_min=1)
    sweep.start_on_gpu(ex, "MIG-4f3a")
    assert ex.submit(os.getenv, "CUDA_VISIBLE_DEVICES").result() == "MIG-4f3a"   # read in the job
