"""Files that must never be half-written: atomic writes and directories, locks, hashes, versions.

A leaf module (it imports nothing else from the package), so data/, export/ and the workspace can
all use it without importing each other.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from pefty_whisper.errors import PeftyError

logger = logging.getLogger(__name__)


def current_umask() -> int:
    """The process's umask, read without changing it (os.umask can only set it)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _user_mode(path: str | Path, directory: bool) -> None:
    # mkstemp/mkdtemp create 0600/0700 for privacy; a finished output gets the user's umask.
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file so that readers see the old content or the new, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        _user_mode(tmp, directory=False)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_directory(final: Path, force: bool = False, what: str | None = None) -> Iterator[Path]:
    """Yield a temporary directory that replaces `final` only when the block succeeds.

    An existing `final` is kept unless `force` is set, and even then it is removed only after
    the new directory is complete. The output is locked for the block, so a second command
    writing the same directory is refused instead of racing this one.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(lock_path(final), what or str(final)):
        _recover_swap(final)
        if final.exists() and not force:
            raise PeftyError(f"{final} already exists: pass --force to replace it")
        for stale in final.parent.glob(f".{final.name}.*.partial"):
            logger.warning("removing %s, left by a command that was killed", stale)
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".partial"))
        _user_mode(tmp, directory=True)
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        replace_directory(tmp, final)


def replace_directory(new: Path, final: Path) -> None:
    """Put the finished directory `new` at `final`; an old `final` is removed only afterwards.

    Two renames: a kill between them leaves `.final.old` and no `final`, which the next
    atomic_directory (or `_recover_swap`) puts back.
    """
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(new, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, final)


def _recover_swap(final: Path) -> None:
    old = final.with_name(f".{final.name}.old")
    if not old.exists():
        return
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
    else:
        logger.warning("restoring %s from %s: a replace was killed halfway", final, old)
        os.replace(old, final)


# -- locks: one writer per round or output directory -------------------------------------------


def lock_path(target: Path) -> Path:
    """`.NAME.lock` beside the directory it guards (inside it would vanish with a replace)."""
    target = Path(target)
    return target.parent / f".{target.name}.lock"


def _process_start(pid: int) -> str | None:
    """The start time of `pid` in clock ticks (Linux): tells a live holder from a reused PID."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holder_is_gone(holder: dict) -> bool:
    """Whether the process that wrote a lock has exited (only knowable on the same host)."""
    if holder.get("host") != socket.gethostname():
        return False
    pid = holder.get("pid")
    if not isinstance(pid, int) or not _pid_alive(pid):
        return True
    started = holder.get("process_start")
    return started is not None and _process_start(pid) not in (None, started)


@contextlib.contextmanager
def exclusive_lock(path: Path, what: str) -> Iterator[None]:
    """Hold `path` (a lock file naming this process) for the block; release it on any exit.

    The lock file is written whole, then hard-linked into place, which fails if it exists: two
    commands can never both hold it. A lock whose process died (kill -9, power loss) is stale
    and taken over, with a warning; a live holder is named in the refusal.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "process_start": _process_start(os.getpid()),
        "command": " ".join(["pefty", *sys.argv[1:]]) if sys.argv else "pefty",
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(me, handle)
        _user_mode(tmp, directory=False)
        for _ in range(3):
            try:
                os.link(tmp, path)
                break
            except FileExistsError:
                holder = read_lock(path)
                if holder and not _holder_is_gone(holder):  # {}: damaged, so nobody's
                    raise PeftyError(
                        f"{what} is in use by pid {holder.get('pid')} on {holder.get('host')} "
                        f"(`{holder.get('command')}`, since {holder.get('since')}): wait for it "
                        f"to finish; if that process is gone, remove {path}"
                    ) from None
                if holder is not None:
                    logger.warning("taking over %s: its process %s is gone", path, holder)
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        else:
            raise PeftyError(f"{path}: could not take the lock for {what}; try again")
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    try:
        yield
    finally:
        holder = read_lock(path)
        if holder is not None and holder.get("pid") == me["pid"]:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def read_lock(path: Path) -> dict | None:
    """The holder a lock file names; an unreadable one counts as held by nobody."""
    try:
        holder = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


# -- disk full -----------------------------------------------------------------------------------


_DISK_FULL_SIGNS = ("No space left", "StorageFull", "code: 28", "file write failed")


def is_disk_full(exc: BaseException) -> bool:
    """Whether an error (or one it was raised from) is ENOSPC, however the library wrapped it:
    OSError 28, torch's "file write failed", safetensors' "No space left" / StorageFull."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(current)
        if any(sign in text for sign in _DISK_FULL_SIGNS):
            return True
        current = current.__cause__ or current.__context__
    return False


def disk_full_error(path: Path | str, action: str) -> PeftyError:
    """The one-line message for a full disk: which path, and the way out."""
    where = Path(path)
    free = ""
    with contextlib.suppress(OSError):
        existing = next(p for p in (where, *where.parents) if p.exists())
        free = f" ({shutil.disk_usage(existing).free / 1e6:.0f} MB free there)"
    return PeftyError(
        f"{where}: no space left on device while {action}{free}; free some space and rerun"
    )


def weights_hash(model_dir: Path) -> str:
    """Content hash of a model's weight files: what `pefty merge` checks an adapter's base against.

    Only the weights count, so re-saving a processor or config does not break the lineage.
    """
    files = sorted(model_dir.glob("*.safetensors")) or sorted(model_dir.glob("*.bin"))
    if not files:
        raise PeftyError(f"{model_dir}: no weight files (*.safetensors) to hash")
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 24), b""):
                digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def package_versions(*names: str) -> dict[str, str]:
    """Versions of the packages that shaped an output, recorded for reproducibility."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in ("pefty-whisper", "torch", "transformers", "peft", *names):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return versions


SHM = Path("/dev/shm")


def check_shared_memory(workers: int, batch_size: int, label_tokens: int, n_mels: int = 80) -> None:
    """Loader workers hand every batch to the main process through /dev/shm; when it is full
    (docker's default is 64 MB) a worker dies of SIGBUS or the main process waits on it.
    Refuse up front, with the way out, when it cannot hold the batches in flight."""
    if workers <= 0 or not SHM.is_dir():
        return
    # 30 s of features and a label of label_tokens int64 ids per example.
    batch_bytes = batch_size * n_mels * 3000 * 4 + batch_size * label_tokens * 8
    needed = 4 * workers * batch_bytes  # prefetch_factor 2 per worker, and room to spare
    free = shutil.disk_usage(SHM).free
    if free < needed:
        raise PeftyError(
            f"{SHM}: {free / 1e6:.0f} MB free, but {workers} loader workers need about "
            f"{needed / 1e6:.0f} MB there: set data.num_workers=0, or give the container more "
            "shared memory (docker run --shm-size=1g)"
        )
