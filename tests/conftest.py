"""Shared test set-up: the ``gpu`` marker skips without CUDA; tiny OPT checkpoints."""

from __future__ import annotations

import os

import pytest
import torch

import dsbox.kernels  # noqa: F401  (without CUDA: Triton's interpreter on, before any import)
from tests.checkpoints import write_tiny_checkpoint


def pytest_configure(config):
    # one intra-op thread: the tiny models gain nothing from more, and oversubscribed
    # OpenMP threads make them many times slower when anything else runs on the box
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # engines and worker processes follow it


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def preln_ckpt(tmp_path_factory):
    """Tiny pre-LN OPT (like opt-125m and larger), HF safetensors + tokenizer files."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("opt-preln"), variant="preln")


@pytest.fixture(scope="session")
def postln_ckpt(tmp_path_factory):
    """Tiny opt-350m-style OPT: post-LN, no final LN, word_embed_proj_dim != hidden_size."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("opt-postln"), variant="postln")
