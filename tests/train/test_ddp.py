"""Two CPU processes (DDP over gloo) give the result of one process with the same global batch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from autocustom.models import load_model
from tests.sample_dataset import write_small_dataset


def launcher(name: str) -> list[str]:
    """Two processes through `accelerate launch` (as users run it) or plain torchrun.

    accelerate's `--cpu` launcher starts one process (multi-CPU goes through MPI there); its multi-process
    launcher (`--multi_gpu`) on a machine without GPUs runs the processes on CPU over gloo.
    """
    binary = shutil.which(name, path=os.path.dirname(sys.executable))
    if binary is None:
        pytest.skip(f"{name} not installed")
    if name == "accelerate":
        options = ["--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
        return [binary, "launch", *options, "--mixed_precision", "no", "--dynamo_backend", "no"]
    return [binary, "--nproc_per_node", "2"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["accelerate", "torchrun"])
def test_two_processes_match_one(tmp_path, tiny_model_dir, name):
    data = write_small_dataset(tmp_path / "data", per_subarea=4)
    common = ["train", "--data", str(data), "--toward", "formal", "--model", str(tiny_model_dir), "--json"]
    common += ["--max-steps", "3", "--eval-steps", "3", "--max-length", "48", "--lr", "1e-3", "--quiet"]
    common += ["--reg-weight", "0", "--mmlu-questions", "4", "--drift-texts", "2"]
    env = {**os.environ, "CI": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    one = [sys.executable, "-m", "autocustom", *common, "--out", str(tmp_path / "one"), "--batch-size", "4"]
    two = [*launcher(name), "-m", "autocustom", *common, "--out", str(tmp_path / "two")]
    two += ["--batch-size", "2"]  # same global batch: 2 processes x 2 pairs
    for command in (one, two):
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    s1 = json.loads((tmp_path / "one" / "summary.json").read_text())
    s2 = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert s2["steps"] == s1["steps"] == 3
    assert s2["bias_shift"]["value"] == pytest.approx(s1["bias_shift"]["value"], abs=1e-5)
    assert json.loads((tmp_path / "two" / "run_config.json").read_text())["processes"] == 2
    a = dict(load_model(str(tmp_path / "one"), device="cpu").model.named_parameters())
    b = dict(load_model(str(tmp_path / "two"), device="cpu").model.named_parameters())
    assert all(torch.allclose(a[name], b[name], atol=1e-4) for name in a)
