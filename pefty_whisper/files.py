"""Files that must never be half-written: atomic writes and directories, content hashes, versions.

A leaf module (it imports nothing else from the package), so data/, export/ and the workspace can
all use it without importing each other.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pefty_whisper.errors import PeftyError

logger = logging.getLogger(__name__)


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file so that readers see the old content or the new, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_directory(final: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that replaces `final` only when the block succeeds.

    An existing `final` is kept unless `force` is set, and even then it is removed only after
    the new directory is complete.
    """
    if final.exists() and not force:
        raise PeftyError(f"{final} already exists: pass --force to replace it")
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}.*.partial"):
        logger.warning("removing %s, left by a command that was killed", stale)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".partial"))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


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
