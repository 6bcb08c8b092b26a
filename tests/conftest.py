"""Shared test fixtures.

Kernel tests need root and BPF. Outside CI they skip when those are missing;
with CI=true a missing privilege FAILS the test, so a skip never hides a
kernel test that should have run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import CaptureRun, require_kernel

# Run under `sudo pytest`, every capture would write its archive as the sudo user (capture/privsep.py),
# who cannot write in pytest's root-owned folders: tests that want that set SUDO_UID themselves.
for _var in ("SUDO_UID", "SUDO_GID", "SUDO_USER", "SUDO_COMMAND"):
    os.environ.pop(_var, None)


@pytest.fixture
def kernel():
    """Use in every test that loads BPF programs."""
    require_kernel()


@pytest.fixture
def capture_run():
    runs: list[CaptureRun] = []

    def start(output: Path, *args: str) -> CaptureRun:
        run = CaptureRun(output, *args)
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.kill()
