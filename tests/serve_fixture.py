"""A real `transformers serve` process serving the packaged SmolLM2, as a pytest fixture.

Usage in a test module::

    from tests.serve_fixture import transformers_server  # noqa: F401  (registers the fixture)

    @pytest.mark.slow
    def test_x(transformers_server):
        backend = OpenAIBackend(transformers_server.model, base_url=transformers_server.base_url)

The server is pinned to the model directory it was started with and refuses any other model name,
so use `transformers_server.model` as the model. It works offline (HF_HUB_OFFLINE=1) because it
loads a local directory; its GET /v1/models answers 500 offline (it scans the hub cache), which
`OpenAIBackend.check_reachable` tolerates. Startup takes seconds; the first request loads nothing more.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

STARTUP_LIMIT_S = 180


@dataclass(frozen=True)
class ServedModel:
    base_url: str  # "http://127.0.0.1:PORT/v1"
    model: str  # the model name the server accepts (its model directory)
    log_path: Path  # the server's stdout and stderr, for debugging a failure


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(root: str) -> bool:
    try:
        with urllib.request.urlopen(f"{root}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def transformers_server(smollm2_dir, tmp_path_factory) -> Iterator[ServedModel]:
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    port = _free_port()
    root = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("transformers-serve") / "server.log"
    command = [sys.executable, "-m", "transformers.cli.transformers", "serve", str(smollm2_dir)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + STARTUP_LIMIT_S
        while not _healthy(root):
            if process.poll() is not None:
                pytest.fail(f"transformers serve exited with {process.returncode}:\n{log_path.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"transformers serve not ready in {STARTUP_LIMIT_S}s:\n{log_path.read_text()}")
            time.sleep(0.5)
        yield ServedModel(f"{root}/v1", str(smollm2_dir), log_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
