"""Shared test set-up: no network, ever; an accidental hub download must fail at once."""

import os

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
