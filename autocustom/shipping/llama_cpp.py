"""Turn Hugging Face models and peft LoRA adapters into GGUF with llama.cpp's own converters.

GGUF is a moving target (new architectures, tokenizer pre-processing hashes, metadata keys), and
llama.cpp's `convert_hf_to_gguf.py` is the reference that llama.cpp, Ollama and LM Studio read back;
a writer of our own would drift from it. So this module only finds, fetches and runs those scripts.
They come pinned from the llama-cpp-python source distribution on PyPI, whose `vendor/llama.cpp/`
carries the converters with the `gguf-py` they were written against: a package index is the one
download channel the tool may rely on, and the pin keeps converter and `gguf` in step.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import field
from pathlib import Path, PurePosixPath
from typing import Any

from autocustom.assets import cache_dir
from autocustom.errors import AutocustomError, UsageError
from autocustom.fileio import temp_dir
from autocustom.layout import ADAPTER_CONFIG

LLAMA_CPP_PYTHON = "0.3.36"  # its sdist's vendor/llama.cpp holds the converters and their gguf-py
# sha256 of llama_cpp_python-0.3.36.tar.gz on PyPI: a download is checked against it before it is unpacked
LLAMA_CPP_PYTHON_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
# environment variables the converter does not get: it reads local files and needs no credentials
SECRET_NAMES = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH", re.IGNORECASE)
CONVERTER = "convert_hf_to_gguf.py"
LORA_CONVERTER = "convert_lora_to_gguf.py"
OUTTYPES = ("f16", "bf16", "q8_0", "f32")  # the converters' --outtype choices we support
ENV_VAR = "LLAMA_CPP_DIR"


def llama_cpp_field() -> Any:
    """`--llama-cpp` of a config that converts with llama.cpp (`export`, `export-composition`)."""
    return field(
        default=None,
        metadata={"help": "llama.cpp checkout (or unpacked llama-cpp-python sdist) with its converters."},
    )


def fetch_llama_cpp_field() -> Any:
    """`--fetch-llama-cpp`, beside `llama_cpp_field`."""
    return field(
        default=False,
        metadata={
            "help": "Download llama.cpp's converters (llama-cpp-python's source) from the package index."
        },
    )


# what a fetch keeps of vendor/llama.cpp: the Python converters and their gguf-py, not the C++ sources
_KEEP_DIRS = ("conversion/", "gguf-py/gguf/", "requirements/")
_KEEP_FILES = re.compile(r"(convert_[\w-]+\.py|requirements\.txt|LICENSE|gguf-py/(pyproject\.toml|LICENSE))")
# modules the converters import whose pip package is named otherwise
_PIP_NAMES = {"mistral_common": "mistral-common", "google": "protobuf", "yaml": "pyyaml"}
# Ollama's Go-template form of ChatML; system messages (the Modelfile's SYSTEM too) come in .Messages
_CHATML_TEMPLATE = """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""


class ConversionError(AutocustomError):
    """A llama.cpp converter that exited with an error; carries its whole stderr for a log."""

    def __init__(self, what: str, fix: str | None = None, *, stderr: str = "") -> None:
        self.stderr = stderr
        super().__init__(what, fix)


def cached_llama_cpp() -> Path:
    """Where `fetch_llama_cpp` unpacks the converters: per version, so a new pin never reuses an old copy."""
    return cache_dir() / "llama.cpp" / LLAMA_CPP_PYTHON


def find_llama_cpp(explicit: str | Path | None = None) -> Path:
    """The llama.cpp directory holding `convert_hf_to_gguf.py`, so export never guesses a location.

    Looks at `explicit` (a llama.cpp checkout or an unpacked llama-cpp-python sdist), then
    $LLAMA_CPP_DIR, then the fetched copy in the user cache; an explicit directory without the
    converter is an error of its own, since the user meant that one.
    """
    if explicit is not None:
        found = _converter_dir(Path(explicit).expanduser())
        if found is None:
            raise UsageError(
                f"--llama-cpp {explicit} holds no {CONVERTER} (nor vendor/llama.cpp/{CONVERTER})",
                "pass the root of a llama.cpp checkout or of an unpacked llama-cpp-python source "
                "distribution, or leave --llama-cpp out to use the fetched copy",
            )
        return found
    looked = []
    if os.environ.get(ENV_VAR):
        from_env = Path(os.environ[ENV_VAR]).expanduser()
        found = _converter_dir(from_env)
        if found is not None:
            return found
        looked.append(f"${ENV_VAR}={from_env}")
    cached = cached_llama_cpp()
    if (cached / CONVERTER).is_file():
        return cached
    looked.append(str(cached))
    raise UsageError(
        f"llama.cpp's {CONVERTER} was not found (looked in {', '.join(looked)})",
        f"pass --fetch-llama-cpp to download llama-cpp-python=={LLAMA_CPP_PYTHON}'s source from the "
        f"package index into {cached}, or --llama-cpp DIR of a llama.cpp checkout",
    )


def _converter_dir(folder: Path) -> Path | None:
    for candidate in (folder, folder / "vendor" / "llama.cpp"):
        if (candidate / CONVERTER).is_file():
            return candidate
    return None


def fetch_llama_cpp() -> Path:
    """Download llama-cpp-python's sdist from the package index and keep its Python converters.

    Idempotent (returns the cached copy), and unpacked into a temporary directory renamed into place,
    so two processes fetching at once never see a half-written copy.
    """
    target = cached_llama_cpp()
    if (target / CONVERTER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=target.parent) as download:
        sdist = _download_sdist(Path(download))
        staging = temp_dir(f".{LLAMA_CPP_PYTHON}-", target.parent)
        try:
            _unpack_converters(sdist, staging)
            with contextlib.suppress(OSError):  # another process finished first: keep theirs
                os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _download_sdist(folder: Path) -> Path:
    """The pinned sdist, checked against its sha256; only it comes as source (pip's metadata step may
    install its build backend, as wheels: `:all:` would build those from source too)."""
    requirement = f"llama-cpp-python=={LLAMA_CPP_PYTHON}"
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "llama-cpp-python"]
    result = subprocess.run(
        [*command, requirement, "-d", str(folder)],
        capture_output=True,
        text=True,
        errors="replace",
        stdin=subprocess.DEVNULL,
    )
    found = sorted(folder.glob("*.tar.gz"))
    if result.returncode != 0 or not found:
        raise UsageError(
            f"cannot download {requirement}'s source from the package index: {_tail(result.stderr, 1)}",
            "check network access and pip's index settings (PIP_INDEX_URL), "
            "or pass --llama-cpp DIR of a llama.cpp checkout",
        )
    digest = hashlib.sha256(found[0].read_bytes()).hexdigest()
    if digest != LLAMA_CPP_PYTHON_SHA256:
        raise UsageError(
            f"{found[0].name} from the package index has sha256 {digest}, not the pinned "
            f"{LLAMA_CPP_PYTHON_SHA256}: it is not the file autocustom was tested with",
            "check the index (PIP_INDEX_URL) you download from, or pass --llama-cpp DIR of a llama.cpp checkout",
        )
    return found[0]


def _unpack_converters(sdist: Path, out_dir: Path) -> None:
    """Copy the Python half of vendor/llama.cpp out of the sdist, file by file (no links, no `..`)."""
    with tarfile.open(sdist, "r:gz") as archive:
        for member in archive:
            relative = _kept_path(member)
            if relative is None:
                continue
            destination = out_dir / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            source = archive.extractfile(member)
            if source is not None:
                with source, open(destination, "wb") as sink:
                    shutil.copyfileobj(source, sink)
    if not (out_dir / CONVERTER).is_file():
        raise UsageError(
            f"{sdist.name} has no vendor/llama.cpp/{CONVERTER}",
            "pass --llama-cpp DIR of a llama.cpp checkout",
        )


def _kept_path(member: tarfile.TarInfo) -> str | None:
    parts = PurePosixPath(member.name).parts
    if not member.isfile() or len(parts) < 4 or parts[1:3] != ("vendor", "llama.cpp") or ".." in parts:
        return None
    relative = "/".join(parts[3:])
    if relative.startswith(_KEEP_DIRS) or _KEEP_FILES.fullmatch(relative):
        return relative
    return None


def converter_env(llama_dir: Path) -> dict[str, str]:
    """The environment a converter runs in: its own vendored gguf-py first on the import path.

    The scripts put gguf-py on sys.path themselves unless NO_LOCAL_GGUF is set; we unset it and add
    gguf-py to PYTHONPATH too, because the `gguf` installed beside autocustom may be older or newer
    than the one the converter was written against. Credentials (`SECRET_NAMES`: OPENAI_API_KEY, HF_TOKEN,
    ...) are left out: a third-party script reading local files has no use for them.
    """
    env = {name: value for name, value in os.environ.items() if not SECRET_NAMES.search(name)}
    env.pop("NO_LOCAL_GGUF", None)
    paths = [str(llama_dir / "gguf-py"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(path for path in paths if path)
    return env


def convert_model(
    hf_dir: str | Path,
    out_file: str | Path,
    *,
    outtype: str = "f16",
    llama_cpp: str | Path | None = None,
) -> Path:
    """Write `hf_dir` (a plain Hugging Face model directory) as one GGUF file with llama.cpp's converter.

    The file appears under its final name only once complete, so a killed export leaves none.
    """
    _check_outtype(outtype)
    hf_dir = _model_dir(hf_dir, "model")
    llama_dir = find_llama_cpp(llama_cpp)
    return _run_converter(llama_dir, [str(llama_dir / CONVERTER), str(hf_dir)], out_file, outtype)


def convert_lora(
    adapter_dir: str | Path,
    base_dir: str | Path,
    out_file: str | Path,
    *,
    outtype: str = "f16",
    llama_cpp: str | Path | None = None,
) -> Path:
    """Write a peft LoRA adapter as a GGUF adapter that llama.cpp and Ollama (ADAPTER) apply at load.

    `base_dir` gives the base model's config (its weights are not read), so nothing is fetched from the hub.
    """
    _check_outtype(outtype)
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / ADAPTER_CONFIG).is_file():
        raise UsageError(f"{adapter_dir} holds no {ADAPTER_CONFIG}", "pass a peft LoRA adapter directory")
    base_dir = _model_dir(base_dir, "base model")
    llama_dir = find_llama_cpp(llama_cpp)
    script = [str(llama_dir / LORA_CONVERTER), "--base", str(base_dir), str(adapter_dir)]
    return _run_converter(llama_dir, script, out_file, outtype)


def _check_outtype(outtype: str) -> None:
    if outtype not in OUTTYPES:
        raise UsageError(f"unknown GGUF type '{outtype}'", f"use one of {', '.join(OUTTYPES)}")


def _model_dir(folder: str | Path, what: str) -> Path:
    path = Path(folder)
    if not (path / "config.json").is_file():
        raise UsageError(
            f"{what} directory {path} holds no config.json",
            "pass a plain Hugging Face model directory (a run's model/ or a packaged model's copy)",
        )
    return path.resolve()


def _run_converter(llama_dir: Path, script: Sequence[str], out_file: str | Path, outtype: str) -> Path:
    out = Path(out_file).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    # a hidden name the converter creates itself (so the file gets the user's umask), renamed when whole;
    # no braces in it, because the converter fills {ftype}-style templates in the file name
    stem = re.sub(r"[{}]", "_", out.name)
    partial = out.parent / f".{stem}.{uuid.uuid4().hex[:8]}.partial"
    try:
        result = subprocess.run(
            [sys.executable, *script, "--outfile", str(partial), "--outtype", outtype],
            capture_output=True,
            text=True,
            errors="replace",
            stdin=subprocess.DEVNULL,
            env=converter_env(llama_dir),
        )
        if result.returncode != 0 or not partial.is_file():
            raise _conversion_error(Path(script[0]).name, result)
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return out


def _conversion_error(script: str, result: subprocess.CompletedProcess[str]) -> ConversionError:
    missing = re.search(r"No module named '([\w.]+)'", result.stderr)
    if missing:
        package = _PIP_NAMES.get(missing.group(1).split(".")[0], missing.group(1).split(".")[0])
        fix = f"install what the converter imports: pip install {package}"
    else:
        fix = "check that the model's architecture is one llama.cpp supports (see the converter's message)"
    return ConversionError(
        f"{script} failed (exit {result.returncode}): {_tail(result.stderr, 2)}", fix, stderr=result.stderr
    )


def _tail(text: str, lines: int) -> str:
    """The last non-empty lines of a subprocess's stderr as one line (progress bars' \\r frames dropped)."""
    kept = [line.split("\r")[-1].strip() for line in text.splitlines()]
    kept = [line for line in kept if line]
    return " | ".join(kept[-lines:]) if kept else "no error output"


def ollama_modelfile(gguf_name: str, tokenizer: Any) -> str:
    """An Ollama Modelfile that runs the exported GGUF with the model's own chat format and stop tokens.

    ChatML (SmolLM2, Qwen, ...) gets an explicit TEMPLATE, plus the system prompt the chat template
    adds when a conversation has none, so Ollama prompts the model as transformers does; for another
    format Ollama picks the built-in template matching the GGUF's `tokenizer.chat_template`.
    """
    chat_template = getattr(tokenizer, "chat_template", None) or ""
    if isinstance(chat_template, dict):  # named templates (default, tool_use, ...)
        chat_template = chat_template.get("default", "")
    chatml = "<|im_start|>" in chat_template
    stops = ["<|im_end|>", "<|im_start|>"] if chatml else []
    eos = getattr(tokenizer, "eos_token", None)
    if eos and eos not in stops:
        stops.append(eos)
    lines = [
        "# Ollama Modelfile written by autocustom: ollama create NAME -f Modelfile",
        f"FROM ./{gguf_name}",
    ]
    if chatml:
        lines.append(f'TEMPLATE """{_CHATML_TEMPLATE}"""')
        system = _default_system(tokenizer)
        if system:
            lines.append(f'SYSTEM """{system}"""')
    else:
        lines.append(
            "# no TEMPLATE: Ollama reads tokenizer.chat_template from the GGUF and uses its matching template"
        )
    lines.extend(f"PARAMETER stop {_quoted(stop)}" for stop in stops)
    return "\n".join(lines) + "\n"


def _default_system(tokenizer: Any) -> str | None:
    """The system turn a ChatML template inserts into a conversation that has none, if any."""
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "-"}], tokenize=False)
    except Exception:  # a template that cannot render a lone user turn adds no system prompt we can see
        return None
    found = re.match(r"<\|im_start\|>system\n(.*?)<\|im_end\|>", text, re.DOTALL)
    if found is None or '"""' in found.group(1):
        return None
    return found.group(1)


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
