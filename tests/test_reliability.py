"""Reliability as a table: every bad input a user can give gets one line naming the problem and the
fix, exit status 2, no traceback, and nothing half-written; untrusted files are refused; kills lose
nothing. docs/reliability.md mirrors the table: regenerate it with

    python tests/test_reliability.py
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager
from unittest import mock

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))   # write_fake_cifar, when run as a script
from test_data import write_fake_cifar, write_fake_fashion  # noqa: E402

from rslad_kit import cli, config, data, evaluate, models, reproduce, runs  # noqa: E402
from rslad_kit.errors import UserError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reliability.md"
BEGIN, END = "<!-- cases: begin -->", "<!-- cases: end -->"


# --- the files a careless download or a stranger leaves behind --------------------------------------

def write_state_dict(path: Path, in_channels: int = 1, num_classes: int = 10) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(models.build("cnn-w4", num_classes, in_channels=in_channels).state_dict(), path)


def write_kit_checkpoint(path: Path, in_channels: int = 1, num_classes: int = 10) -> None:
    """A checkpoint as the kit saves one: weights plus the metadata that names the architecture."""
    torch.manual_seed(0)
    model = models.build("cnn-w4", num_classes, in_channels=in_channels)
    meta = {"config": config.to_dict(config.preset("smoke", "sat")), "num_classes": num_classes,
            "in_channels": in_channels}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "epoch": 2, "meta": meta}, path)


def write_truncated(path: Path) -> None:
    write_state_dict(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def write_corrupt(path: Path) -> None:
    """A checkpoint whose zip directory (the end of the file) was overwritten."""
    write_state_dict(path)
    raw = bytearray(path.read_bytes())
    raw[-200:] = os.urandom(200)
    path.write_bytes(bytes(raw))


def write_safetensors(path: Path) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    path.write_bytes(len(header).to_bytes(8, "little") + header + b"\0\0\0\0")


def write_foreign_zip(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("README.txt", "holiday photos")
        z.writestr("photo.jpg", b"\xff\xd8\xff")


class RunsCode:
    """Unpickling this runs a shell command: the attack a weights_only load must refuse."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_code_carrying(path: Path) -> None:
    torch.save({"model": models.build("cnn-w4", 10, in_channels=1).state_dict(),
                "extra": RunsCode(path.parent / "code-ran")}, path)


def write_broken_cifar(root: Path) -> None:
    write_fake_cifar(root, "cifar10")
    batch = root / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(batch.read_bytes()[:100])


def write_damaged_fashion(root: Path, file: str, damage: Callable[[bytes], bytes] | None) -> None:
    """A Fashion-MNIST copy in torchvision's layout whose `file` is damaged (None: deleted)."""
    write_fake_fashion(root / data.FASHION_FOLDER)
    path = root / data.FASHION_FOLDER / file
    if damage is None:
        path.unlink()
    else:
        path.write_bytes(damage(path.read_bytes()))


@contextlib.contextmanager
def without_fashion(tmp: Path):
    """A machine without Debian's dataset-fashion-mnist, and offline."""
    def offline(*args, **kwargs):
        raise OSError("Network is unreachable")

    import torchvision.datasets
    with mock.patch.object(data, "FASHION_DEBIAN", tmp / "no-debian-copy"), \
            mock.patch.object(torchvision.datasets.FashionMNIST, "download", offline):
        yield


def write_started_run(folder: Path) -> None:
    """The last.pt of a smoke SAT run stopped after epoch 1 (what --resume reads)."""
    cfg = config.preset("smoke", "sat")
    folder.mkdir(parents=True)
    runs.save({"epoch": 1, "meta": {"config": config.to_dict(cfg)}}, folder / "last.pt")


def write_epoch_1(folder: Path) -> None:
    folder.mkdir()
    runs.save({"epoch": 1}, folder / "last.pt")


# --- simulated faults (as root, chmod cannot make a folder read-only, so the refusal is simulated) ----

@contextlib.contextmanager
def read_only(folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o555)
    denied = PermissionError(errno.EACCES, "Permission denied")
    try:
        with mock.patch("tempfile.TemporaryFile", side_effect=denied) if os.geteuid() == 0 else contextlib.nullcontext():
            yield
    finally:
        folder.chmod(0o755)


def disk_full_during(save_number: int):
    """torch.save that fills the disk halfway through its `save_number`-th call."""
    real_save, calls = torch.save, {"n": 0}

    def save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == save_number:
            Path(f).write_bytes(b"half a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    return mock.patch("torch.save", save)


@contextlib.contextmanager
def held_lock(folder: Path):
    with runs.lock(folder, "reproduce"):
        yield


def results_for_other_eps(out: Path) -> None:
    folder = out / "smoke"
    folder.mkdir(parents=True)
    (folder / "plan.json").write_text(json.dumps({"preset": "smoke", "dataset": "digits", "eps": 0.3}))


# --- the table ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    id: str
    what: str                                   # the bad input, in words
    argv: str | None = None                     # CLI: arguments after `rslad-kit`, {tmp} is the folder
    call: Callable[[Path], object] | None = None  # Python API
    prepare: Callable[[Path], None] | None = None
    fault: Callable[[Path], ContextManager] | None = None

    @property
    def surface(self) -> str:
        return "CLI" if self.argv else "API"


TRAIN = "train --preset smoke --out {tmp}/run"
EVAL = "evaluate --model cnn-w4 --dataset digits --eps 0.2 --attacks clean --json {tmp}/out/row.json"
OK = " --checkpoint {tmp}/ok.pt"
FASHION = "evaluate --model cnn-w4 --dataset fashion --checkpoint {tmp}/ok.pt --data-root {tmp}/data --offline"


def _ok(tmp: Path) -> None:
    write_state_dict(tmp / "ok.pt")


def _eval_api(x_scale: float = 1.0, fill: float | None = None, eps: float = 0.1):
    def call(tmp: Path):
        x = torch.rand(8, 1, 8, 8) * x_scale
        if fill is not None:
            x[0, 0, 0, 0] = fill
        model = models.build("cnn-w4", 10, in_channels=1).eval()
        return evaluate.evaluate(model, (x, torch.zeros(8, dtype=torch.long)), ["clean"], eps=eps)
    return call


def _run_task(tmp: Path):
    plan = reproduce.build_plan("smoke", tmp)
    task = next(t for t in plan.tasks() if t.name == "eval:teacher")
    return reproduce.run_task(task, plan, progress=False)


def _evaluated_checkpoint(tmp: Path, keep: bool = True) -> None:
    """A teacher checkpoint evaluated earlier, then replaced by another file with the same name (or deleted)."""
    folder = tmp / "smoke"
    write_state_dict(folder / "runs" / "teacher" / "best.pt")
    if not keep:
        (folder / "runs" / "teacher" / "best.pt").unlink()
    (folder / "evals").mkdir(parents=True)
    (folder / "evals" / "teacher.json").write_text(json.dumps({"best": {"clean": 99.0, "sha256": "0" * 64}}))


CASES = [
    # --- unknown names
    Case("preset", "an unknown preset", argv=TRAIN + " --method sat --preset imagenet"),
    Case("method", "an unknown method", argv=TRAIN + " --method dropout"),
    Case("model", "an unknown model", argv=TRAIN + " --method sat --set model=vgg"),
    Case("dataset", "an unknown dataset", argv=EVAL + OK + " --dataset mnist", prepare=_ok),
    Case("attack", "an unknown attack", argv=EVAL + OK + " --attacks clean,pgd50", prepare=_ok),
    Case("teacher-name", "an unknown RobustBench teacher", argv=TRAIN + " --method rslad --teacher robustbench:Nobody"),
    Case("teacher-missing", "a teacher file that does not exist", argv=TRAIN + " --method rslad --teacher {tmp}/t.pt"),
    Case("reproduce-preset", "reproduce with an unknown preset", argv="reproduce --preset imagenet --out {tmp}/r"),
    Case("api-model", "models.build with an unknown name", call=lambda tmp: models.build("vgg", 10)),
    Case("api-dataset", "data.load with an unknown name", call=lambda tmp: data.load("mnist")),
    # --- values out of range
    Case("eps-zero", "eps = 0", argv=EVAL + OK + " --eps 0", prepare=_ok),
    Case("eps-big", "eps = 8 (pixel units instead of 8/255)", argv=EVAL + OK + " --eps 8", prepare=_ok),
    Case("eps-negative", "a negative training eps", argv=TRAIN + " --method sat --set attack.eps=-0.1"),
    Case("api-eps", "evaluate(eps=0)", call=_eval_api(eps=0.0)),
    Case("steps-zero", "0 attack steps for adversarial training", argv=TRAIN + " --method sat --set attack.steps=0"),
    Case("lr-negative", "a negative learning rate", argv=TRAIN + " --method sat --set lr=-0.1"),
    Case("epochs-negative", "--epochs -1", argv=TRAIN + " --method sat --epochs -1"),
    Case("batch-too-big", "a batch larger than the training set", argv=TRAIN + " --method sat --set batch_size=5000"),
    Case("n-zero", "evaluate --n 0", argv=EVAL + OK + " --n 0", prepare=_ok),
    # --- teachers that do not fit
    Case("teacher-classes", "a teacher with 100 classes for a 10-class dataset",
         argv=TRAIN + " --method rslad --teacher {tmp}/t.pt",
         prepare=lambda tmp: write_kit_checkpoint(tmp / "t.pt", num_classes=100)),
    Case("teacher-channels", "a teacher for RGB images on grey digits",
         argv=TRAIN + " --method rslad --teacher {tmp}/t.pt",
         prepare=lambda tmp: write_kit_checkpoint(tmp / "t.pt", in_channels=3)),
    Case("teacher-bare", "a bare state dict teacher without its architecture",
         argv=TRAIN + " --method rslad --teacher {tmp}/t.pt", prepare=lambda tmp: write_state_dict(tmp / "t.pt")),
    # --- data
    Case("data-offline", "CIFAR-10 absent and --offline",
         argv="evaluate --model cnn-w4 --dataset cifar10 --checkpoint {tmp}/rgb.pt --data-root {tmp}/data --offline",
         prepare=lambda tmp: write_state_dict(tmp / "rgb.pt", in_channels=3)),
    Case("data-truncated", "a truncated CIFAR-10 batch file",
         argv="evaluate --model cnn-w4 --dataset cifar10 --checkpoint {tmp}/rgb.pt --data-root {tmp}/data --offline",
         prepare=lambda tmp: (write_state_dict(tmp / "rgb.pt", in_channels=3), write_broken_cifar(tmp / "data"))),
    Case("api-data-offline", "data.load of absent CIFAR-100 with download=False",
         call=lambda tmp: data.load("cifar100", tmp / "data", download=False)),
    Case("fashion-offline", "Fashion-MNIST in neither --data-root nor Debian's folder, and --offline",
         argv=FASHION, prepare=_ok, fault=without_fashion),
    Case("api-fashion-no-network", "data.load of Fashion-MNIST found nowhere, and the download fails",
         call=lambda tmp: data.load("fashion", tmp / "data"), fault=without_fashion),
    Case("fashion-missing-file", "a Fashion-MNIST folder that lacks a file",
         argv=FASHION, fault=without_fashion,
         prepare=lambda tmp: (_ok(tmp), write_damaged_fashion(tmp / "data", "t10k-labels-idx1-ubyte", None))),
    Case("fashion-truncated", "a truncated Fashion-MNIST idx file", argv=FASHION, fault=without_fashion,
         prepare=lambda tmp: (_ok(tmp), write_damaged_fashion(tmp / "data", "t10k-images-idx3-ubyte",
                                                              lambda raw: raw[:1000]))),
    Case("fashion-magic", "an idx file with the wrong magic number (labels where images belong)",
         argv=FASHION, fault=without_fashion,
         prepare=lambda tmp: (_ok(tmp), write_damaged_fashion(tmp / "data", "t10k-images-idx3-ubyte",
                                                              lambda raw: b"\0\0\x08\x01" + raw[4:]))),
    Case("api-fashion-gz", "a corrupt .gz idx file", fault=without_fashion,
         call=lambda tmp: data.load("fashion", tmp / "data", download=False),
         prepare=lambda tmp: (write_fake_fashion(tmp / "data" / data.FASHION_FOLDER, gz=True),
                              (tmp / "data" / data.FASHION_FOLDER / "t10k-images-idx3-ubyte.gz").write_bytes(b"junk"))),
    Case("fashion-root-file", "--data-root names a file, not a folder", argv=FASHION.replace("{tmp}/data", "{tmp}/ok.pt"),
         prepare=_ok),
    Case("api-train-size", "a training-set size larger than the training set",
         call=lambda tmp: data.load("digits", train_size=5000)),
    # --- checkpoint files, checked before any data is read or downloaded
    Case("ckpt-missing", "a checkpoint that does not exist (CIFAR-10 not downloaded first)",
         argv="evaluate --model resnet18 --dataset cifar10 --checkpoint {tmp}/none.pt --data-root {tmp}/data"),
    Case("ckpt-html", "an HTML page saved as .pt (CIFAR-10 not downloaded first)",
         argv="evaluate --model resnet18 --dataset cifar10 --checkpoint {tmp}/x.pt --data-root {tmp}/data",
         prepare=lambda tmp: (tmp / "x.pt").write_text("<!DOCTYPE html><html><title>Google Drive</title>")),
    Case("ckpt-empty", "an empty checkpoint", argv=EVAL + " --checkpoint {tmp}/x.pt",
         prepare=lambda tmp: (tmp / "x.pt").write_bytes(b"")),
    Case("ckpt-truncated", "a truncated checkpoint", argv=EVAL + " --checkpoint {tmp}/x.pt",
         prepare=lambda tmp: write_truncated(tmp / "x.pt")),
    Case("ckpt-corrupt", "a checkpoint with a damaged zip directory", argv=EVAL + " --checkpoint {tmp}/x.pt",
         prepare=lambda tmp: write_corrupt(tmp / "x.pt")),
    Case("ckpt-random", "random bytes", argv=EVAL + " --checkpoint {tmp}/x.pt",
         prepare=lambda tmp: (tmp / "x.pt").write_bytes(bytes(range(256)) * 8)),
    Case("ckpt-safetensors", "a safetensors file", argv=EVAL + " --checkpoint {tmp}/x.pt",
         prepare=lambda tmp: write_safetensors(tmp / "x.pt")),
    Case("ckpt-zip", "a zip archive of something else", argv=EVAL + " --checkpoint {tmp}/x.pt",
         prepare=lambda tmp: write_foreign_zip(tmp / "x.pt")),
    Case("ckpt-code", "a pickle that runs a shell command when loaded", argv=EVAL + " --checkpoint {tmp}/x.pt",
         prepare=lambda tmp: write_code_carrying(tmp / "x.pt")),
    Case("ckpt-wrong-model", "a checkpoint of another architecture", argv=EVAL + OK + " --model cnn-w8", prepare=_ok),
    Case("api-ckpt-code", "models.load_checkpoint of a code-carrying pickle",
         call=lambda tmp: models.load_checkpoint(models.build("cnn-w4", 10, in_channels=1), tmp / "x.pt"),
         prepare=lambda tmp: write_code_carrying(tmp / "x.pt")),
    # --- where results go
    Case("out-read-only", "train into a read-only folder", argv="train --preset smoke --method sat --out {tmp}/ro/run",
         fault=lambda tmp: read_only(tmp / "ro")),
    Case("json-read-only", "evaluate --json into a read-only folder",
         argv="evaluate --model cnn-w4 --dataset digits --attacks clean --checkpoint {tmp}/ok.pt --json {tmp}/ro/row.json",
         prepare=_ok, fault=lambda tmp: read_only(tmp / "ro")),
    *(Case(f"{command}-out-file", f"{command} --out under a path that is a file", argv=f"{command} --out {{tmp}}/f/x{extra}",
           prepare=lambda tmp: (tmp / "f").write_text("a file"))
      for command, extra in (("reproduce", ""), ("teacher-study", ""), ("sweep", " --executor debug"),
                             ("figures", " --results {tmp}/r/classroom"))),
    *(Case(f"{command}-out-read-only", f"{command} into a read-only folder", argv=f"{command} --out {{tmp}}/ro/x{extra}",
           fault=lambda tmp: read_only(tmp / "ro"))
      for command, extra in (("reproduce", ""), ("teacher-study", ""), ("sweep", " --executor debug"),
                             ("figures", " --results {tmp}/r/classroom"))),
    Case("disk-full", "a full disk while a checkpoint is saved (the previous one is kept)",
         call=lambda tmp: runs.save({"epoch": 2}, tmp / "run" / "last.pt"),
         prepare=lambda tmp: write_epoch_1(tmp / "run"),
         fault=lambda tmp: disk_full_during(1)),
    # --- inputs to attacks
    Case("api-nan", "NaN in the images", call=_eval_api(fill=float("nan"))),
    Case("api-inf", "Inf in the images", call=_eval_api(fill=float("inf"))),
    Case("api-0-255", "images in [0, 255] instead of [0, 1]", call=_eval_api(x_scale=255.0)),
    # --- overrides and resume
    Case("set-typo", "--set with a misspelt field", argv=TRAIN + " --method sat --set lrr=0.1"),
    Case("set-type", "--set with a value of the wrong type", argv=TRAIN + " --method sat --set epochs=ten"),
    Case("set-attack-typo", "--set with a misspelt attack field", argv=TRAIN + " --method sat --set attack.stepz=3"),
    Case("set-form", "--set without '='", argv=TRAIN + " --method sat --set lr"),
    Case("resume-other", "--resume with other settings than the run started with",
         argv=TRAIN + " --method sat --resume --set lr=0.5", prepare=lambda tmp: write_started_run(tmp / "run")),
    Case("resume-none", "--resume where no run was started", argv=TRAIN + " --method sat --resume"),
    Case("start-over", "starting a new run over an existing one", argv=TRAIN + " --method sat",
         prepare=lambda tmp: write_started_run(tmp / "run")),
    # --- reproduce's results folder
    Case("reproduce-locked", "a second reproduce on a results folder in use",
         argv="reproduce --preset smoke --out {tmp}/r", fault=lambda tmp: held_lock(tmp / "r" / "smoke")),
    Case("reproduce-mixed", "reproduce into a folder built at another eps",
         argv="reproduce --preset smoke --out {tmp}/r", prepare=lambda tmp: results_for_other_eps(tmp / "r")),
    Case("reproduce-changed", "a checkpoint that changed after it was evaluated",
         call=_run_task, prepare=_evaluated_checkpoint),
    Case("reproduce-missing", "a checkpoint deleted after it was evaluated",
         call=_run_task, prepare=lambda tmp: _evaluated_checkpoint(tmp, keep=False)),
]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder under `folder`, with a hash of each file's bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def attempt(case: Case, tmp: Path) -> tuple[int, str, bool]:
    """Run the case: its exit status (2 for a UserError from the API), what the user reads, and
    whether the files under `tmp` are exactly as before."""
    stderr = io.StringIO()
    with case.fault(tmp) if case.fault else contextlib.nullcontext():
        before = snapshot(tmp)
        if case.argv:
            argv = ["--threads", "1", *shlex.split(case.argv.format(tmp=tmp))]
            with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
                status = cli.main(argv)
            lines = [line for line in stderr.getvalue().splitlines() if not line.startswith("rslad-kit: warning: ")]
            message = "\n".join(lines).removeprefix("rslad-kit: error: ")
        else:
            status, message = 0, ""
            try:
                case.call(tmp)
            except UserError as err:
                status, message = 2, str(err)
        return status, message, snapshot(tmp) == before


def normalise(message: str, tmp: Path) -> str:
    """The message as the doc shows it: no temporary paths, checksums or process ids."""
    message = message.strip().replace(str(tmp.resolve()), "<tmp>").replace(str(tmp), "<tmp>")
    message = re.sub(r"\b[0-9a-f]{12}\.\.\.", "<sha>...", message)
    return re.sub(r"pid \d+", "pid N", message)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_bad_input_gets_one_line_exit_2_and_writes_nothing(case, tmp_path):
    tmp = tmp_path / "work"
    tmp.mkdir()
    if case.prepare:
        case.prepare(tmp)
    status, message, unchanged = attempt(case, tmp)
    assert status == 2, message
    assert message.strip() and "\n" not in message.strip() and "Traceback" not in message
    assert unchanged   # nothing half-written, nothing downloaded
    assert not (tmp / "code-ran").exists()   # a refused pickle ran nothing
    row = f"| `{case.id}` | {case.surface} | {case.what} | {normalise(message, tmp)} |"
    assert row in DOC.read_text(), f"docs/reliability.md is out of date (python tests/test_reliability.py):\n{row}"


def test_the_table_has_at_least_30_inputs_across_cli_and_api():
    assert len(CASES) >= 30 and len({c.id for c in CASES}) == len(CASES)
    assert {c.surface for c in CASES} == {"CLI", "API"}


def test_the_cheap_checks_come_first_in_a_real_process(tmp_path):
    """The `rslad-kit` entry point itself: an HTML page as a checkpoint is reported before CIFAR-10 is
    looked for, so nothing is downloaded and the user reads about the file they gave."""
    (tmp_path / "page.pt").write_text("<html><body>Quota exceeded</body></html>")
    result = subprocess.run([sys.executable, "-m", "rslad_kit", "evaluate", "--model", "resnet18", "--dataset",
                             "cifar10", "--checkpoint", str(tmp_path / "page.pt"), "--data-root",
                             str(tmp_path / "data")], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2 and "is an HTML page" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["page.pt"]


# --- faults ------------------------------------------------------------------------------------------

def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "rslad_kit", "--threads", "1", *args]


ENV = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def test_a_full_disk_during_training_keeps_the_last_checkpoint_and_the_run_resumes(tmp_path):
    args = ["train", "--preset", "smoke", "--method", "sat"]
    assert cli.main(["--threads", "1", *args, "--out", str(tmp_path / "straight")]) == 0
    stderr = io.StringIO()
    with disk_full_during(3), contextlib.redirect_stderr(stderr):   # saves: best 1, last 1, best 2 ...
        assert cli.main(["--threads", "1", *args, "--out", str(tmp_path / "full")]) == 2
    errors = [line for line in stderr.getvalue().splitlines() if "error" in line]   # beside progress bars
    assert len(errors) == 1 and "the disk is full" in errors[0] and "Traceback" not in stderr.getvalue()
    assert torch.load(tmp_path / "full" / "last.pt", weights_only=True)["epoch"] == 1
    assert not list((tmp_path / "full").glob(".*.tmp"))
    assert cli.main(["--threads", "1", *args, "--out", str(tmp_path / "full"), "--resume"]) == 0
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "full" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], after: float = 0.0, timeout: float = 300) -> None:
    """kill -9 `proc` `after` seconds past the moment `ready()` first holds."""
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, "finished before it could be killed"
        assert time.time() < deadline, "never reached the point to kill at"
        time.sleep(0.05)
    time.sleep(after)
    assert proc.poll() is None, "finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


PLAN = ("from rslad_kit import reproduce; reproduce.run('smoke', out={out!r}, tables=(3,), seeds=1, "
        "methods=('sat',), workers=2, progress=False)")


def scores(folder: Path) -> dict:
    """Every evaluation's accuracies, without timings, provenance and file sums (a checkpoint holds its
    epochs' timings, so its bytes differ; the tests compare the weights themselves)."""
    out = {}
    for path in sorted((folder / "evals").glob("*.json")):
        done = json.loads(path.read_text())
        out[path.name] = {ckpt: {k: v for k, v in entry.items() if k not in ("seconds", "warnings", "sha256")}
                          for ckpt, entry in done.items() if ckpt != "provenance"}
    return out


@pytest.fixture(scope="module")
def straight_plan(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    subprocess.run([sys.executable, "-c", PLAN.format(out=str(out))], env=ENV, check=True, capture_output=True)
    assert set(scores(out / "smoke")) == {"teacher.json", "cnn-w4-sat-s0.json"}   # the comparisons compare something
    return out / "smoke"


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["training", "evaluation"])
def test_kill_9_during_a_plan_with_two_workers_then_rerun_gives_the_same_results(straight_plan, tmp_path, moment):
    """kill -9 of `reproduce` (its workers die with it) while runs train, or while AutoAttack
    evaluates; the rerun finishes with exactly the uninterrupted plan's numbers."""
    folder = tmp_path / "smoke"
    proc = subprocess.Popen([sys.executable, "-c", PLAN.format(out=str(tmp_path))], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if moment == "training":
        ready = lambda: any(folder.glob("runs/*/last.pt"))   # noqa: E731
    else:
        ready = lambda: (folder / "logs" / "eval-cnn-w4-sat-s0.log").is_file()   # noqa: E731
    # evaluation: a second in, the checkpoint's AutoAttack (attacks run in name order) is under way
    kill_when(proc, ready, after=0.0 if moment == "training" else 1.0)
    time.sleep(0.5)   # let the workers' death signals land
    assert not (folder / "table3.md").exists()
    subprocess.run([sys.executable, "-c", PLAN.format(out=str(tmp_path))], env=ENV, check=True, capture_output=True)
    assert scores(folder) == scores(straight_plan)
    for run in ("teacher", "cnn-w4-sat-s0"):
        a = torch.load(straight_plan / "runs" / run / "last.pt", weights_only=True)["model"]
        b = torch.load(folder / "runs" / run / "last.pt", weights_only=True)["model"]
        assert all(torch.equal(a[k], b[k]) for k in a), run


@pytest.mark.slow
def test_a_dead_worker_stops_the_plan_with_its_run_and_log_and_the_rerun_resumes(straight_plan, tmp_path):
    folder = tmp_path / "smoke"
    proc = subprocess.Popen([sys.executable, "-c", PLAN.format(out=str(tmp_path))], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log = folder / "logs" / "teacher.log"
    deadline = time.time() + 300
    while not (log.is_file() and "pid" in log.read_text()):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    worker = int(re.search(r"pid (\d+)", log.read_text()).group(1))
    os.kill(worker, signal.SIGKILL)   # as the out-of-memory killer would
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1   # a UserError inside `python -c` is an exception; the CLI would exit 2
    last = stderr.strip().splitlines()[-1]
    assert "a worker process died" in last and "teacher (log: " in last and str(log) in last
    subprocess.run([sys.executable, "-c", PLAN.format(out=str(tmp_path))], env=ENV, check=True, capture_output=True)
    assert scores(folder) == scores(straight_plan)


@pytest.mark.slow
def test_a_second_reproduce_on_the_same_folder_stops_and_a_killed_ones_lock_is_recovered(tmp_path):
    folder = tmp_path / "smoke"
    proc = subprocess.Popen([sys.executable, "-c", PLAN.format(out=str(tmp_path))], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (folder / ".lock").is_file() or "pid" not in (folder / ".lock").read_text():
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    second = subprocess.run(_cli("reproduce", "--preset", "smoke", "--out", str(tmp_path)), env=ENV,
                            capture_output=True, text=True)
    assert second.returncode == 2 and f"in use by another reproduce (pid {proc.pid})" in second.stderr
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with runs.lock(folder, "reproduce"):   # the OS dropped the killed process's lock
        pass


@pytest.mark.slow
def test_kill_9_during_autoattack_then_rerun_resumes_to_the_same_result(tmp_path):
    """AutoAttack keeps a state file between its attacks; a killed evaluation resumes from it."""
    script = f"""
import torch
from rslad_kit import attacks, data, models
torch.manual_seed(0)
model = models.build('cnn-w4', 10, in_channels=1).eval()
test = data.load('digits').test
x_adv = attacks.autoattack(model, test.x[:200], test.y[:200], eps=0.2, state_path=__import__('pathlib').Path({str(tmp_path / 'state.json')!r}),
                           only=('apgd-ce', 'apgd-t'))
torch.save(x_adv, {str(tmp_path / 'x_adv.pt')!r})
"""
    straight = script.replace("state.json", "straight.json").replace("x_adv.pt", "straight.pt")
    subprocess.run([sys.executable, "-c", straight], env=ENV, check=True, capture_output=True)
    proc = subprocess.Popen([sys.executable, "-c", script], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    kill_when(proc, lambda: (tmp_path / "state.json").is_file())
    assert not (tmp_path / "x_adv.pt").exists()
    subprocess.run([sys.executable, "-c", script], env=ENV, check=True, capture_output=True)
    assert torch.equal(torch.load(tmp_path / "x_adv.pt"), torch.load(tmp_path / "straight.pt"))


# --- provenance --------------------------------------------------------------------------------------

@pytest.mark.slow
def test_every_result_json_records_what_produced_it(straight_plan):
    keys = {"config", "seed", "kit_version", "git_commit", "torch_version", "device", "data_sha256"}
    for path in (straight_plan / "evals").glob("*.json"):
        done = json.loads(path.read_text())
        assert keys <= set(done["provenance"]), path
        for ckpt in ("best", "last"):
            if ckpt in done:
                file = straight_plan / "runs" / path.stem / f"{ckpt}.pt"
                assert done[ckpt]["sha256"] == runs.sha256(file)
    for path in (straight_plan / "runs").glob("*/config.json"):
        assert keys <= set(json.loads(path.read_text())), path
    student = json.loads((straight_plan / "runs" / "cnn-w4-sat-s0" / "config.json").read_text())
    assert "teacher_sha256" not in student   # SAT reads no teacher


def test_the_evaluate_json_records_checksums_and_provenance(tmp_path):
    write_state_dict(tmp_path / "ok.pt")
    assert cli.main(["--threads", "1", "evaluate", "--model", "cnn-w4", "--dataset", "digits", "--eps", "0.2",
                     "--attacks", "clean", "--n", "20", "--checkpoint", str(tmp_path / "ok.pt"),
                     "--json", str(tmp_path / "row.json")]) == 0
    row = json.loads((tmp_path / "row.json").read_text())
    assert row["checkpoint_sha256"] == runs.sha256(tmp_path / "ok.pt")
    assert row["data_sha256"] == runs.data_checksum(data.load("digits").test.take(20))
    assert {"config", "seed", "kit_version", "git_commit", "torch_version", "device"} <= set(row)


# --- the doc -----------------------------------------------------------------------------------------

def write_doc() -> None:
    """Run every case and write its row between the markers in docs/reliability.md."""
    import tempfile

    lines = ["| case | where | bad input | what the user reads (exit status 2) |", "|---|---|---|---|"]
    for case in CASES:
        with tempfile.TemporaryDirectory() as folder:
            tmp = Path(folder) / "work"
            tmp.mkdir()
            if case.prepare:
                case.prepare(tmp)
            status, message, unchanged = attempt(case, tmp)
            assert status == 2 and unchanged, (case.id, message)
            lines.append(f"| `{case.id}` | {case.surface} | {case.what} | {normalise(message, tmp)} |")
    text = DOC.read_text()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    DOC.write_text(f"{head}{BEGIN}\n" + "\n".join(lines) + f"\n{END}{tail}")
    print(f"wrote {len(CASES)} cases to {DOC}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    write_doc()
