"""llama-cpp-python's OpenAI-compatible server for the slow tests: built once per machine, else skipped.

llama-cpp-python has no Linux wheels on PyPI, so the first use builds it (minutes on 2 cores) into a venv
in the user cache, keyed by version; a machine that cannot build it skips the test with the reason.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from autocustom.assets import cache_dir
from autocustom.shipping.llama_cpp import LLAMA_CPP_PYTHON

# llama-cpp-python has no Linux wheels on PyPI; the build skips the multimodal library, tools and tests
SERVER_CMAKE_ARGS = (
    "-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF "
    "-DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_OPENSSL=OFF"
)


def _imports_server(python: Path) -> bool:
    check = [str(python), "-c", "import llama_cpp.server.app"]
    return python.is_file() and subprocess.run(check, capture_output=True).returncode == 0


def server_python() -> Path:
    """A venv with llama-cpp-python[server], built once per machine and version (minutes), else skip."""
    venv = cache_dir() / "llama-cpp-python-server" / LLAMA_CPP_PYTHON
    if _imports_server(venv / "bin" / "python"):
        return venv / "bin" / "python"
    venv.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".venv-", dir=venv.parent))
    env = {**os.environ, "CMAKE_ARGS": SERVER_CMAKE_ARGS}
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
    try:
        subprocess.run([sys.executable, "-m", "venv", str(staging)], check=True)
        install = [str(staging / "bin" / "python"), "-m", "pip", "install", "-q"]
        result = subprocess.run(
            [*install, f"llama-cpp-python[server]=={LLAMA_CPP_PYTHON}"],
            capture_output=True,
            text=True,
            env=env,
        )
        if result.returncode != 0:
            tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
            pytest.skip(f"cannot build llama-cpp-python=={LLAMA_CPP_PYTHON} here: {tail}")
        shutil.rmtree(venv, ignore_errors=True)  # a broken earlier build
        with suppress(OSError):  # another process finished first: keep theirs
            os.replace(staging, venv)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return venv / "bin" / "python"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_ready(client, server: subprocess.Popen, log: Path, seconds: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"llama_cpp.server exited {server.returncode}: {log.read_text()[-2000:]}")
        with suppress(httpx.HTTPError):
            if client.get("/v1/models").status_code == 200:
                return
        time.sleep(0.5)
    pytest.fail(f"llama_cpp.server not ready in {seconds:.0f} s: {log.read_text()[-2000:]}")


@contextmanager
def serving(gguf: Path, log: Path) -> Iterator:
    """An httpx client on `python -m llama_cpp.server --model GGUF`, ready; the server stops after."""
    import httpx

    python = server_python()
    port = _free_port()
    command = [str(python), "-m", "llama_cpp.server", "--model", str(gguf)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "1024", "--n_threads", "2"]
    with open(log, "w") as sink:
        server = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            _wait_ready(client, server, log)
            yield client
    finally:
        server.terminate()
        server.wait(timeout=30)


def chat(client, question: str, max_tokens: int = 16) -> dict:
    """One greedy chat completion; the choice's message."""
    body = {"messages": [{"role": "user", "content": question}], "max_tokens": max_tokens, "temperature": 0}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]
