"""Run folders: atomic writes, checkpoint metadata, provenance, checksums and locks.

Everything that writes results goes through here, so a kill at any moment leaves either the old file
or the new one, never half of one; every result can say what produced it (code, data, checkpoint);
and two processes never write one folder at once.

Taught in notebooks/04_training.ipynb (run folders and resume).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import platform
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

import rslad_kit
from rslad_kit.errors import UserError

# Errors that say "this place cannot take the file": the user can fix them, the kit cannot.
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_NO_WRITE = (errno.EACCES, errno.EPERM, errno.EROFS)


# --- writing -----------------------------------------------------------------------------------------

def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write via a temporary file in the same folder, then rename: readers never see half a file.

    A failed write (a full disk, a read-only folder) removes the temporary file and leaves any
    previous `path` intact; the two cases a user can fix become one-line UserErrors.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.errno in _NO_SPACE:
            raise UserError(f"the disk is full while writing {path}; the previous file is intact: free some "
                            "space and rerun the same command (train: with --resume)") from err
        if err.errno in _NO_WRITE:
            raise UserError(f"cannot write {path} ({os.strerror(err.errno)}); choose a writable folder "
                            "(--out / --json) or fix its permissions") from err
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save(obj: Any, path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def check_writable(folder: str | Path) -> None:
    """Raise a UserError now, before any work, if files cannot be created in `folder` (or where it would go)."""
    folder = Path(folder).absolute()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise UserError(f"{existing} is a file, so {folder} cannot be a folder; choose another path")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise UserError(f"cannot write in {existing} ({os.strerror(err.errno or errno.EACCES)}); "
                        "choose a writable folder or fix its permissions") from err


def history(folder: str | Path) -> list[dict[str, Any]]:
    """The per-epoch metrics of the run in `folder` (its metrics.jsonl; [] before the first epoch)."""
    path = Path(folder) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.is_file() else []


# --- what produced a result --------------------------------------------------------------------------

def provenance(device: torch.device | str) -> dict[str, Any]:
    """What produced a result: kit version, git commit, torch version, device."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(rslad_kit.__file__).parent,
                                capture_output=True, text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {"kit_version": rslad_kit.__version__, "git_commit": commit, "torch_version": str(torch.__version__),
            "device": f"{device.type}: {name}", "threads": torch.get_num_threads()}


def sha256(path: str | Path) -> str:
    """The SHA-256 of a file, recorded with every result that uses it (checkpoints, teachers)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def data_checksum(*splits: Any) -> str:
    """SHA-256 of the images and labels of `splits` (objects with `.x` and `.y`), as stored in memory:
    two results with the same checksum saw exactly the same examples in the same order."""
    digest = hashlib.sha256()
    for split in splits:
        for t in (split.x, split.y):
            digest.update(t.detach().cpu().contiguous().numpy())
    return digest.hexdigest()


# --- checkpoints ---------------------------------------------------------------------------------------

def checkpoint_info(path: str | Path) -> dict[str, Any]:
    """A kit checkpoint's epoch and metadata, without reading its tensors (memory-mapped)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return {"epoch": checkpoint["epoch"], "meta": checkpoint["meta"]}


def is_finished(out: str | Path) -> bool:
    """Whether `out` holds a run that trained all its epochs."""
    path = Path(out) / "last.pt"
    if not path.is_file():
        return False
    info = checkpoint_info(path)
    return info["epoch"] >= info["meta"]["config"]["epochs"]


# --- one writer per folder -----------------------------------------------------------------------------

@contextmanager
def lock(folder: str | Path, what: str) -> Iterator[None]:
    """Hold `folder/.lock` while this process writes in `folder`; `what` names the job in the refusal.

    The lock is an flock on the file, which the OS drops when the process exits however it exits
    (kill -9 included): a lock file left by a killed process never blocks a rerun. On a normal exit
    the file is removed, and so is the folder if the lock created it and nothing else was written.
    """
    folder = Path(folder)
    check_writable(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".lock"
    while True:
        f = open(path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise UserError(f"{folder} is in use by another {what} ({holder}); wait for it to finish or stop "
                            "it, then rerun") from None
        if path.exists() and os.stat(path).st_ino == os.fstat(f.fileno()).st_ino:
            break
        f.close()   # the holder removed the file as we opened it: lock the new one
    try:
        f.truncate(0)
        f.write(f"pid {os.getpid()}")
        f.flush()
        yield
    finally:
        path.unlink()   # while still locked, so no one locks the old file after we leave
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()
        if created and not any(folder.iterdir()):   # refused before writing: leave no trace
            folder.rmdir()
