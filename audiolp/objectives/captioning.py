"""Captioning pretraining: a Transformer decoder on the frame-level encoder output, CapPa mixed decoding.

With probability ``parallel_prob`` (CapPa default 0.75; 0 = pure autoregressive) a sample is decoded in
parallel: all its decoder inputs are <mask> and it has no causal mask. The choice is per sample and seeded by
(seed, step, cut_id), so the self-attention mask is built per sample. Loss: token cross-entropy with label
smoothing 0.1, averaged over the caption tokens (incl. EOS) of the batch. The output projection and the float32
log-softmax run only on those tokens (not on the padded (N, L, vocab) grid): the same loss, less memory.

Authors' settings (the config defaults): facebook/bart-base tokenizer, captions up to 128 tokens, lower-cased with
punctuation removed (``clean_captions``, as Auden's audio_caption data module does).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from audiolp.models.decoder import CaptionDecoder, DecoderConfig, eval_mode
from audiolp.models.text import PAPER_CAPTION_TOKENIZER
from audiolp.objectives.base import (Objective, ObjectiveOutput, audio_inputs, module_device, pick_captions,
                                     seeded_uniform)


@dataclass
class CaptioningConfig:
    num_layers: int = 6
    d_model: int = 768
    num_heads: int = 8
    ffn_dim: int = 3072
    dropout: float = 0.1
    tie_embeddings: bool = True
    # HF hub id or local folder; offline runs pass "minilm" (models.text.OFFLINE_TEXT_MODEL, --text-model).
    tokenizer: str = PAPER_CAPTION_TOKENIZER  # "facebook/bart-base"
    max_caption_tokens: int = 128  # word pieces incl. EOS (Auden: 128); longer captions are cut
    # Lower-case, drop punctuation, collapse whitespace before tokenising (Auden's audio_caption data); a caption
    # with nothing left (e.g. "!!!") is used raw instead, counted in the logs as "captions_uncleanable".
    clean_captions: bool = True
    parallel_prob: float = 0.75
    label_smoothing: float = 0.1
    seed: int = 0  # drives the per-step caption and parallel/autoregressive choices
    # > 0: compute the output projection + loss over this many target tokens at a time, recomputing each chunk's
    # logits in backward, so only one (chunk, vocab) block of logits is alive (the memory of a 50k vocabulary at large
    # batches); costs one more output projection. 0 = all tokens at once.
    loss_chunk_tokens: int = 0

    def __post_init__(self):
        if not str(self.tokenizer).strip():
            raise ValueError("CaptioningConfig.tokenizer is empty; give an HF hub id ('facebook/bart-base'), a local "
                             "folder, or 'minilm' for the offline MiniLM tokenizer")
        if not 0.0 <= self.parallel_prob <= 1.0:
            raise ValueError(f"CaptioningConfig.parallel_prob={self.parallel_prob}; must lie in [0, 1]")
        if self.max_caption_tokens < 2:
            raise ValueError(f"CaptioningConfig.max_caption_tokens={self.max_caption_tokens}; need >= 2")
        if self.loss_chunk_tokens < 0:
            raise ValueError(f"CaptioningConfig.loss_chunk_tokens={self.loss_chunk_tokens}; use 0 (off) or > 0")

    def decoder_config(self) -> DecoderConfig:
        return DecoderConfig(num_layers=self.num_layers, d_model=self.d_model, num_heads=self.num_heads,
                             ffn_dim=self.ffn_dim, dropout=self.dropout, max_positions=self.max_caption_tokens,
                             tie_embeddings=self.tie_embeddings, tokenizer=self.tokenizer)


_PUNCT = re.compile(r"[^\w\s]|_")  # anything not a letter, digit or space (unicode-aware)
_SPACE = re.compile(r"\s+")


def clean_caption(text: str) -> str:
    """Lower-cased, punctuation removed, whitespace collapsed: "A dog barks, twice!" -> "a dog barks twice".

    Punctuation is deleted, not turned into a space ("dog's" -> "dogs")."""
    return _SPACE.sub(" ", _PUNCT.sub("", text.lower())).strip()


def clean_captions(captions: list[str]) -> tuple[list[str], int]:
    """Each caption cleaned; one that cleans to nothing is kept raw (a training target must not be empty).
    -> (captions, how many were kept raw)."""
    out, raw = [], 0
    for c in captions:
        cleaned = clean_caption(c)
        if cleaned:
            out.append(cleaned)
        else:
            out.append(c)
            raw += 1
    return out, raw


class CaptioningObjective(Objective):
    config_class = CaptioningConfig
    requires_captions = True

    def __init__(self, encoder: nn.Module, config: CaptioningConfig | dict | None = None):
        super().__init__(encoder, config)
        self.decoder = CaptionDecoder(encoder.output_dim, self.config.decoder_config())

    @property
    def tokenizer(self):
        return self.decoder.tokenizer

    def captions_for(self, batch: dict, step: int) -> tuple[list[str], int]:
        """The step's caption per clip (seeded choice), cleaned if ``clean_captions``; and the number kept raw."""
        return self.prepare_captions(pick_captions(batch, self.config.seed, step))

    def prepare_captions(self, captions: list[str]) -> tuple[list[str], int]:
        """``captions`` as the decoder trains on them (cleaned if ``clean_captions``), and the number kept raw."""
        return clean_captions(list(captions)) if self.config.clean_captions else (list(captions), 0)

    def parallel_choice(self, cut_ids: list[str], step: int) -> torch.Tensor:
        """(N,) bool: True = decode this sample in parallel at this step."""
        p = self.config.parallel_prob
        return torch.tensor([seeded_uniform(self.config.seed, step, cid, "parallel") < p for cid in cut_ids],
                            dtype=torch.bool)

    def decoder_inputs(self, captions: list[str], parallel: torch.Tensor):
        """-> inputs, targets (N, L), causal (N,), token_pad (N, L), all on the module's device."""
        dev = module_device(self)
        inputs, targets = self.tokenizer.encode(captions, self.config.max_caption_tokens)
        inputs, targets, parallel = inputs.to(dev), targets.to(dev), parallel.to(dev)
        token_pad = targets == -100
        inputs = torch.where(parallel[:, None] & ~token_pad, torch.full_like(inputs, self.tokenizer.mask_id), inputs)
        return inputs, targets, ~parallel, token_pad

    def _target_hidden(self, feats, lens, captions, parallel):
        """-> decoder states (K, d) and targets (K,) at the K non-padding target positions (row-major order), plus
        the (N, L) bool mask of those positions. Padding positions never reach the output projection."""
        frames, out_lens = self.encoder(feats, lens)
        inputs, targets, causal, token_pad = self.decoder_inputs(captions, parallel)
        hidden = self.decoder.hidden(inputs, frames, out_lens, causal=causal, token_pad=token_pad)
        keep = ~token_pad  # token_pad is exactly targets == -100
        return hidden[keep], targets[keep], keep

    def _target_logits(self, feats, lens, captions, parallel):
        """-> float32 logits (K, vocab), targets (K,) and the (N, L) mask, as :meth:`_target_hidden`."""
        hidden, targets, keep = self._target_hidden(feats, lens, captions, parallel)
        return self.decoder.output_logits(hidden).float(), targets, keep

    def _loss_and_correct(self, hidden: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed label-smoothed cross-entropy and the number of argmax hits over the given target tokens."""
        logits = self.decoder.output_logits(hidden).float()
        loss = F.cross_entropy(logits, targets, label_smoothing=self.config.label_smoothing, reduction="sum")
        return loss, (logits.detach().argmax(-1) == targets).sum()

    def forward(self, batch: dict, step: int = 0) -> ObjectiveOutput:
        feats, lens = audio_inputs(batch, module_device(self))
        captions, uncleanable = self.captions_for(batch, step)
        parallel = self.parallel_choice(list(batch["cut_ids"]), step)
        hidden, targets, _ = self._target_hidden(feats, lens, captions, parallel)
        k, chunk = targets.numel(), self.config.loss_chunk_tokens
        if chunk and k > chunk:
            from torch.utils.checkpoint import checkpoint

            loss_sum, correct = 0.0, 0
            for i in range(0, k, chunk):
                part, hits = checkpoint(self._loss_and_correct, hidden[i: i + chunk], targets[i: i + chunk],
                                        use_reentrant=False)
                loss_sum, correct = loss_sum + part, correct + int(hits)
        else:
            loss_sum, correct = self._loss_and_correct(hidden, targets)
            correct = int(correct)
        # Mean over the kept tokens == the old mean over the (N, L) grid with ignore_index (both divide by K).
        loss = loss_sum / max(k, 1)
        acc = correct / max(k, 1)
        logs = {"loss": float(loss.detach()), "token_acc": acc, "parallel_frac": float(parallel.float().mean())}
        if self.config.clean_captions:
            logs["captions_uncleanable"] = float(uncleanable)
        return ObjectiveOutput(loss=loss, logs=logs, num_items=int(feats.shape[0]))

    def loss_weight(self, batch: dict, step: int = 0) -> int:
        """The loss is a mean over target tokens: how many ``forward(batch, step)`` has."""
        captions, _ = self.captions_for(batch, step)
        _, targets = self.tokenizer.encode(captions, self.config.max_caption_tokens)
        return int((targets != -100).sum())

    def caption_loss(self, batch: dict, captions: list[str], parallel: bool = False) -> torch.Tensor:
        """Per-sample mean token NLL (no label smoothing) of ``captions[i]`` given clip i: (N,).

        Autoregressive by default; compare true vs shuffled captions to see whether the decoder uses the audio.
        """
        feats, lens = audio_inputs(batch, module_device(self))
        if len(captions) != feats.shape[0]:
            raise ValueError(f"caption_loss: {len(captions)} captions for {feats.shape[0]} clips; give one per clip")
        par = torch.full((feats.shape[0],), bool(parallel), dtype=torch.bool)
        captions, _ = self.prepare_captions(captions)  # scored as the model was trained on them
        logits, targets, keep = self._target_logits(feats, lens, list(captions), par)
        nll = F.cross_entropy(logits, targets, reduction="none")
        rows = keep.nonzero()[:, 0]  # sample index of each kept token
        total = torch.zeros(keep.shape[0], dtype=nll.dtype, device=nll.device).index_add(0, rows, nll)
        return total / keep.sum(1).clamp(min=1)

    @torch.no_grad()
    def generate(self, batch_or_features, lengths: torch.Tensor | None = None, max_len: int | None = None,
                 beam_size: int = 1, length_penalty: float = 1.0, return_ids: bool = False, use_cache: bool = True):
        """Captions for a batch dict or for (features (N, T, 80), lengths): greedy, or beam search if beam_size > 1.
        ``use_cache=False``: the uncached reference decoder (same captions, slower)."""
        dev = module_device(self)
        if isinstance(batch_or_features, dict):
            feats, lens = audio_inputs(batch_or_features, dev)
        else:
            if lengths is None:
                raise ValueError("generate(features, lengths): lengths (N,) are required with a features tensor")
            feats, lens = batch_or_features.to(dev).float(), lengths.to(dev).long()
        with eval_mode(self):
            frames, out_lens = self.encoder(feats, lens)
            return self.decoder.generate(frames, out_lens, max_len=max_len, beam_size=beam_size,
                                         length_penalty=length_penalty, return_ids=return_ids, use_cache=use_cache)
