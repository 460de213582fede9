"""GGUF export through llama.cpp's own converters, checked by reading the files back with other readers.

The converters come from PyPI (llama-cpp-python's sdist, downloaded once into the user cache); the f16
file must give the Hugging Face model's logits through transformers' GGUF loader, the LoRA file must
carry the adapter's matrices, and (slow) llama-cpp-python's server must chat with the exported file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from autocustom.errors import UsageError
from autocustom.shipping.llama_cpp import (
    LLAMA_CPP_PYTHON,
    ConversionError,
    convert_lora,
    convert_model,
    converter_env,
    fetch_llama_cpp,
    find_llama_cpp,
    ollama_modelfile,
)
from tests.llama_server import chat, serving

PROMPT = "The capital of France is Paris, and the capital of Italy is"


# ---------------------------------------------------------------- finding the converter (no download)


@pytest.fixture
def empty_cache(tmp_path, monkeypatch) -> Path:
    """A user cache with no fetched llama.cpp in it, and no $LLAMA_CPP_DIR."""
    monkeypatch.setenv("AUTOCUSTOM_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LLAMA_CPP_DIR", raising=False)
    return tmp_path / "cache"


def _fake_checkout(folder: Path) -> Path:
    """A directory laid out like llama.cpp (the converter file is all find_llama_cpp looks for)."""
    folder.mkdir(parents=True)
    (folder / "convert_hf_to_gguf.py").write_text("# placeholder\n")
    return folder


def test_not_found_names_where_it_looked_and_the_fix(empty_cache, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("LLAMA_CPP_DIR", str(empty))
    with pytest.raises(UsageError) as caught:
        find_llama_cpp()
    line = str(caught.value)
    assert "\n" not in line
    assert f"$LLAMA_CPP_DIR={empty}" in line
    assert str(empty_cache / "llama.cpp" / LLAMA_CPP_PYTHON) in line
    assert f"--fetch-llama-cpp to download llama-cpp-python=={LLAMA_CPP_PYTHON}" in line
    assert "--llama-cpp DIR" in line


def test_explicit_dir_without_the_converter_is_its_own_error(empty_cache, tmp_path):
    with pytest.raises(UsageError) as caught:
        find_llama_cpp(str(tmp_path))
    line = str(caught.value)
    assert "\n" not in line
    assert f"--llama-cpp {tmp_path} holds no convert_hf_to_gguf.py" in line


def test_lookup_order_explicit_then_env_then_cache(empty_cache, tmp_path, monkeypatch):
    cached = _fake_checkout(empty_cache / "llama.cpp" / LLAMA_CPP_PYTHON)
    assert find_llama_cpp() == cached
    from_env = _fake_checkout(tmp_path / "env-checkout")
    monkeypatch.setenv("LLAMA_CPP_DIR", str(from_env))
    assert find_llama_cpp() == from_env
    sdist = _fake_checkout(tmp_path / "llama_cpp_python-x" / "vendor" / "llama.cpp")
    assert find_llama_cpp(str(tmp_path / "llama_cpp_python-x")) == sdist  # an unpacked sdist's root


def test_bad_outtype_and_missing_model_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="use one of f16, bf16, q8_0, f32"):
        convert_model(tmp_path, tmp_path / "x.gguf", outtype="q4_k_m")
    with pytest.raises(UsageError, match=r"holds no config\.json"):
        convert_model(tmp_path, tmp_path / "x.gguf")
    with pytest.raises(UsageError, match=r"holds no adapter_config\.json"):
        convert_lora(tmp_path, tmp_path, tmp_path / "x.gguf")


# ---------------------------------------------------------------- the real converters


@pytest.fixture(scope="session")
def smollm2_f16(tmp_path_factory, smollm2_dir, llama_cpp_dir) -> Path:
    return convert_model(smollm2_dir, tmp_path_factory.mktemp("gguf") / "smollm2-f16.gguf")


def test_fetch_keeps_the_python_converters_only(llama_cpp_dir):
    assert fetch_llama_cpp() == llama_cpp_dir  # idempotent
    for needed in ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py", "conversion/llama.py"):
        assert (llama_cpp_dir / needed).is_file(), needed
    assert (llama_cpp_dir / "gguf-py" / "gguf" / "gguf_writer.py").is_file()
    assert not (llama_cpp_dir / "ggml").exists() and not (llama_cpp_dir / "src").exists()
    assert not list(llama_cpp_dir.rglob("*.cpp"))


def test_converters_import_their_vendored_gguf(llama_cpp_dir, monkeypatch):
    monkeypatch.setenv("NO_LOCAL_GGUF", "1")  # would make the scripts use the installed gguf
    found = subprocess.run(
        [sys.executable, "-c", "import gguf; print(gguf.__file__)"],
        env=converter_env(llama_cpp_dir),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(found).is_relative_to(llama_cpp_dir / "gguf-py")


def _logits(model, ids):
    import torch

    with torch.no_grad():
        return model(ids).logits[0].float()


def _correlation(a, b) -> float:
    import torch

    return torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1].item()


@pytest.fixture(scope="module")
def smollm2_hf(smollm2_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    return model, tokenizer


def test_f16_gguf_gives_the_hf_models_logits_and_tokens(smollm2_f16, smollm2_hf):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = smollm2_hf
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    folder, name = str(smollm2_f16.parent), smollm2_f16.name
    gguf_tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    assert gguf_tokenizer(PROMPT).input_ids == ids[0].tolist()
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    expected, got = _logits(model, ids), _logits(loaded, ids)
    assert _correlation(expected, got) >= 0.999
    assert torch.equal(expected.argmax(-1), got.argmax(-1))


def test_q8_0_gguf_holds_quantized_weights_close_to_the_models(
    tmp_path, smollm2_dir, smollm2_hf, llama_cpp_dir
):
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFReader
    from gguf.quants import dequantize

    out = convert_model(smollm2_dir, tmp_path / "smollm2-q8_0.gguf", outtype="q8_0", llama_cpp=llama_cpp_dir)
    assert [path.name for path in tmp_path.iterdir()] == [out.name]  # no partial file left behind
    tensors = {tensor.name: tensor for tensor in GGUFReader(out).tensors}
    v_proj = tensors["blk.0.attn_v.weight"]  # v is stored unpermuted (q and k are reordered for RoPE)
    assert v_proj.tensor_type == GGMLQuantizationType.Q8_0
    got = dequantize(v_proj.data, v_proj.tensor_type)
    expected = smollm2_hf[0].model.layers[0].self_attn.v_proj.weight.detach().numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=np.abs(expected).max() / 100)


def test_failed_conversion_reports_the_converters_error_and_leaves_no_file(tmp_path, llama_cpp_dir):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"architectures": ["NoSuchForCausalLM"]}))
    out_dir = tmp_path / "out"
    with pytest.raises(ConversionError) as caught:
        convert_model(model, out_dir / "x.gguf")
    line = str(caught.value)
    assert "\n" not in line
    assert "convert_hf_to_gguf.py failed (exit 1)" in line and "NoSuchForCausalLM" in line
    assert "NoSuchForCausalLM" in caught.value.stderr
    assert list(out_dir.iterdir()) == []


# ---------------------------------------------------------------- LoRA adapters


def test_lora_adapter_converts_with_its_matrices_and_alpha(tmp_path, smollm2_dir, llama_cpp_dir):
    import numpy as np
    import torch
    from gguf import GGUFReader
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.02)  # a fresh adapter is zero; make it say something
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    v_proj = peft_model.base_model.model.model.layers[0].self_attn.v_proj
    expected_a = v_proj.lora_A["default"].weight.detach().numpy()
    expected_b = v_proj.lora_B["default"].weight.detach().numpy()

    out = convert_lora(
        adapter, smollm2_dir, tmp_path / "adapter.gguf", outtype="f32", llama_cpp=llama_cpp_dir
    )
    reader = GGUFReader(out)
    assert reader.fields["general.type"].contents() == "adapter"
    assert reader.fields["adapter.type"].contents() == "lora"
    assert reader.fields["adapter.lora.alpha"].contents() == pytest.approx(8.0)
    tensors = {tensor.name: tensor for tensor in reader.tensors}
    assert sum(name.endswith(".lora_a") for name in tensors) == 2 * 30  # q and v in each of 30 layers
    assert sum(name.endswith(".lora_b") for name in tensors) == 2 * 30
    got_a = np.asarray(tensors["blk.0.attn_v.weight.lora_a"].data).reshape(expected_a.shape)
    got_b = np.asarray(tensors["blk.0.attn_v.weight.lora_b"].data).reshape(expected_b.shape)
    np.testing.assert_allclose(got_a, expected_a, rtol=1e-6)
    np.testing.assert_allclose(got_b, expected_b, rtol=1e-6)


# ---------------------------------------------------------------- Ollama


def test_modelfile_for_chatml_has_template_system_and_stops(smollm2_dir):
    from transformers import AutoTokenizer

    text = ollama_modelfile("smollm2-f16.gguf", AutoTokenizer.from_pretrained(smollm2_dir))
    lines = text.splitlines()
    assert "FROM ./smollm2-f16.gguf" in lines
    template = "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"
    assert f'TEMPLATE """{template}"""' in text
    # SmolLM2's template adds this system turn when a conversation has none; Ollama's SYSTEM does the same
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""' in lines
    assert 'PARAMETER stop "<|im_end|>"' in lines
    assert text.count('"""') == 4


def test_modelfile_for_an_unknown_template_leaves_it_to_the_gguf(smollm2_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    tokenizer.chat_template = "{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    text = ollama_modelfile("model.gguf", tokenizer)
    assert not any(line.startswith(("TEMPLATE", "SYSTEM")) for line in text.splitlines())
    assert "tokenizer.chat_template" in text
    assert f'PARAMETER stop "{tokenizer.eos_token}"' in text.splitlines()


@pytest.mark.slow
def test_llama_cpp_server_chats_with_the_converted_gguf(smollm2_f16, tmp_path):
    with serving(smollm2_f16, tmp_path / "server.log") as client:
        message = chat(client, "What is the capital of France? Answer in one word.")
    assert message["role"] == "assistant"
    assert "paris" in message["content"].lower()


def test_the_converter_gets_no_credentials(tmp_path, monkeypatch):
    for name in ("OPENAI_API_KEY", "HF_TOKEN", "AWS_SECRET_ACCESS_KEY", "GH_PASSWORD"):
        monkeypatch.setenv(name, "s3cret")
    monkeypatch.setenv("LANG", "C.UTF-8")
    env = converter_env(tmp_path)
    assert "s3cret" not in env.values() and env["LANG"] == "C.UTF-8" and "PATH" in env
