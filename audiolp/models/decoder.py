"""Caption decoder: a Transformer decoder cross-attending to the frame-level audio encoder output.

Paper setting: 6 layers, d 768, 8 heads, FFN 3072, GELU, dropout 0.1, BART-base tokenizer
(``tokenizer="facebook/bart-base"``: <s>, </s>, <pad>, <mask>). The offline default tokenizer is the WordPiece
vocabulary of the shipped MiniLM ([CLS] = BOS, [SEP] = EOS, [PAD], [MASK]). Every size is a config field.

The self-attention mask is built per sample, so one batch can mix autoregressive (causal) samples and
CapPa-style parallel samples (all inputs <mask>, no causal mask).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from audiolp.models.pooling import valid_mask
from audiolp.models.text import DEFAULT_TEXT_MODEL, load_tokenizer


@dataclass
class DecoderConfig:
    num_layers: int = 6
    d_model: int = 768
    num_heads: int = 8
    ffn_dim: int = 3072
    dropout: float = 0.1
    max_positions: int = 64  # longest decoder sequence (caption tokens incl. EOS)
    tie_embeddings: bool = True
    tokenizer: str = DEFAULT_TEXT_MODEL  # paper: "facebook/bart-base"


class CaptionTokenizer:
    """An HF tokenizer plus the four special ids the decoder needs.

    BART-style tokenizers give bos/eos directly; BERT-style ones have none, so [CLS] is BOS and [SEP] is EOS.
    """

    def __init__(self, name: str = DEFAULT_TEXT_MODEL):
        self.name = name
        self.hf = load_tokenizer(name)
        t = self.hf
        self.bos_id = t.bos_token_id if t.bos_token_id is not None else t.cls_token_id
        self.eos_id = t.eos_token_id if t.eos_token_id is not None else t.sep_token_id
        self.pad_id = t.pad_token_id
        self.mask_id = t.mask_token_id
        missing = [n for n, v in (("bos/cls", self.bos_id), ("eos/sep", self.eos_id), ("pad", self.pad_id),
                                  ("mask", self.mask_id)) if v is None]
        if missing:
            raise ValueError(f"tokenizer {name!r} has no {missing} token; the caption decoder needs BOS, EOS, PAD and "
                             "MASK (use a BERT- or BART-style tokenizer)")
        self.vocab_size = len(t)

    def encode(self, captions: list[str], max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (inputs, targets), both (N, L): inputs = [BOS] + tokens, targets = tokens + [EOS], -100 at padding.

        Captions are cut to ``max_tokens - 1`` word pieces so that the EOS always fits.
        """
        ids = self.hf(list(captions), add_special_tokens=False, truncation=True, max_length=max_tokens - 1)["input_ids"]
        length = max(len(x) for x in ids) + 1
        inputs = torch.full((len(ids), length), self.pad_id, dtype=torch.long)
        targets = torch.full((len(ids), length), -100, dtype=torch.long)
        for i, x in enumerate(ids):
            inputs[i, : len(x) + 1] = torch.tensor([self.bos_id] + x, dtype=torch.long)
            targets[i, : len(x) + 1] = torch.tensor(x + [self.eos_id], dtype=torch.long)
        return inputs, targets

    def decode(self, ids: list[list[int]]) -> list[str]:
        return self.hf.batch_decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=True)


def decoder_param_count(cfg: DecoderConfig, vocab_size: int, encoder_dim: int) -> int:
    """Closed-form parameter count of ``CaptionDecoder`` (checked against the module in the tests)."""
    d, f, v, p = cfg.d_model, cfg.ffn_dim, vocab_size, cfg.max_positions
    attn = 4 * d * d + 4 * d  # in_proj (3d x d + 3d) and out_proj (d x d + d)
    per_layer = 2 * attn + (2 * d * f + f + d) + 3 * 2 * d  # self + cross attention, FFN, 3 LayerNorms
    embed = v * d + p * d
    memory = encoder_dim * d + d + 2 * d  # projection + LayerNorm
    head = v if cfg.tie_embeddings else v * d + v
    return embed + memory + cfg.num_layers * per_layer + 2 * d + head


@contextmanager
def eval_mode(*modules: nn.Module):
    """Temporarily switch modules to eval (no dropout) and restore their previous modes."""
    modes = [m.training for m in modules]
    try:
        for m in modules:
            m.eval()
        yield
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)


class CaptionDecoder(nn.Module):
    def __init__(self, encoder_dim: int, config: DecoderConfig | None = None,
                 tokenizer: CaptionTokenizer | None = None):
        super().__init__()
        cfg = config or DecoderConfig()
        if cfg.d_model % cfg.num_heads:
            raise ValueError(f"DecoderConfig: d_model={cfg.d_model} not divisible by num_heads={cfg.num_heads}")
        self.config = cfg
        self.tokenizer = tokenizer or CaptionTokenizer(cfg.tokenizer)
        self.vocab_size = self.tokenizer.vocab_size
        d = cfg.d_model
        self.memory_proj = nn.Linear(encoder_dim, d)
        self.memory_norm = nn.LayerNorm(d)
        self.tok_emb = nn.Embedding(self.vocab_size, d)
        self.pos_emb = nn.Embedding(cfg.max_positions, d)
        layer = nn.TransformerDecoderLayer(d, cfg.num_heads, cfg.ffn_dim, cfg.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.layers = nn.TransformerDecoder(layer, cfg.num_layers)
        self.final_norm = nn.LayerNorm(d)
        self.emb_dropout = nn.Dropout(cfg.dropout)
        if cfg.tie_embeddings:
            # Tied through F.linear in forward (no shared Parameter), so safetensors checkpoints need no alias handling.
            self.lm_head = None
            self.out_bias = nn.Parameter(torch.zeros(self.vocab_size))
        else:
            self.lm_head = nn.Linear(d, self.vocab_size)
        nn.init.normal_(self.tok_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.02)

    # ---- masks -------------------------------------------------------------------------------------------------
    def self_attn_mask(self, token_pad: torch.Tensor, causal: torch.Tensor) -> torch.Tensor:
        """(N * heads, L, L) bool, True = blocked. Row i of sample n sees key j iff j is not padding and
        (sample n is parallel or j <= i). Position 0 is never padding, so no row is fully blocked."""
        n, length = token_pad.shape
        future = torch.ones(length, length, dtype=torch.bool, device=token_pad.device).triu(1)
        blocked = (causal.view(n, 1, 1) & future) | token_pad.view(n, 1, length)
        return blocked.repeat_interleave(self.config.num_heads, dim=0)

    # ---- forward -----------------------------------------------------------------------------------------------
    def encode_memory(self, frames: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder frames (N, T, encoder_dim) -> projected memory (N, T, d) and its padding mask (True = pad)."""
        memory = self.memory_norm(self.memory_proj(frames))
        return memory, ~valid_mask(lengths.clamp(min=1), frames.shape[1])

    def forward(self, tokens: torch.Tensor, frames: torch.Tensor, lengths: torch.Tensor,
                causal: torch.Tensor | None = None, token_pad: torch.Tensor | None = None,
                memory: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """tokens (N, L) -> logits (N, L, vocab). ``causal`` (N,) bool per sample (default: all causal);
        ``token_pad`` (N, L) bool (default: tokens == pad id)."""
        n, length = tokens.shape
        if length > self.config.max_positions:
            raise ValueError(f"decoder input has {length} tokens > max_positions={self.config.max_positions}; "
                             "raise DecoderConfig.max_positions or cut captions shorter")
        if causal is None:
            causal = torch.ones(n, dtype=torch.bool, device=tokens.device)
        if token_pad is None:
            token_pad = tokens == self.tokenizer.pad_id
            token_pad[:, 0] = False
        mem, mem_pad = memory if memory is not None else self.encode_memory(frames, lengths)
        pos = torch.arange(length, device=tokens.device)
        x = self.emb_dropout(self.tok_emb(tokens) + self.pos_emb(pos)[None])
        x = self.layers(x, mem, tgt_mask=self.self_attn_mask(token_pad, causal.to(torch.bool)),
                        memory_key_padding_mask=mem_pad)
        x = self.final_norm(x)
        if self.lm_head is None:
            return F.linear(x, self.tok_emb.weight, self.out_bias)
        return self.lm_head(x)

    # ---- generation --------------------------------------------------------------------------------------------
    def _strip(self, seqs: torch.Tensor) -> list[list[int]]:
        """Generated rows (BOS first) -> token ids up to (excluding) the first EOS."""
        out = []
        for row in seqs[:, 1:].tolist():
            ids = []
            for t in row:
                if t == self.tokenizer.eos_id:
                    break
                ids.append(t)
            out.append(ids)
        return out

    def _next_logp(self, seqs, frames, lengths, mem) -> torch.Tensor:
        """Log-probabilities of the next token (float32); BOS, PAD and MASK are never generated."""
        logits = self(seqs, frames, lengths, token_pad=torch.zeros_like(seqs, dtype=torch.bool), memory=mem)
        logits = logits[:, -1].float()
        tk = self.tokenizer
        banned = [i for i in {tk.bos_id, tk.pad_id, tk.mask_id} if i != tk.eos_id]
        logits[:, banned] = float("-inf")
        return logits.log_softmax(-1)

    @torch.no_grad()
    def greedy_ids(self, frames: torch.Tensor, lengths: torch.Tensor, max_len: int) -> list[list[int]]:
        n = frames.shape[0]
        mem = self.encode_memory(frames, lengths)
        seqs = torch.full((n, 1), self.tokenizer.bos_id, dtype=torch.long, device=frames.device)
        done = torch.zeros(n, dtype=torch.bool, device=frames.device)
        for _ in range(max_len):
            nxt = self._next_logp(seqs, frames, lengths, mem).argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, self.tokenizer.pad_id), nxt)
            seqs = torch.cat([seqs, nxt[:, None]], 1)
            done |= nxt == self.tokenizer.eos_id
            if bool(done.all()):
                break
        return self._strip(seqs)

    @torch.no_grad()
    def beam_search_ids(self, frames: torch.Tensor, lengths: torch.Tensor, max_len: int, beam_size: int = 4,
                        length_penalty: float = 1.0) -> list[list[int]]:
        """Beam search; a finished beam keeps its score and only extends with padding. The final pick divides
        the log-probability by (length incl. EOS) ** length_penalty."""
        n, b, v = frames.shape[0], beam_size, self.vocab_size
        dev = frames.device
        frames_b, lengths_b = frames.repeat_interleave(b, 0), lengths.repeat_interleave(b, 0)
        mem = self.encode_memory(frames_b, lengths_b)
        seqs = torch.full((n * b, 1), self.tokenizer.bos_id, dtype=torch.long, device=dev)
        scores = torch.full((n, b), float("-inf"), device=dev)
        scores[:, 0] = 0.0  # all beams start identical: only beam 0 may expand at step 1
        done = torch.zeros(n * b, dtype=torch.bool, device=dev)
        hyp_len = torch.zeros(n * b, dtype=torch.long, device=dev)
        pad_row = torch.full((v,), float("-inf"), device=dev)
        pad_row[self.tokenizer.pad_id] = 0.0
        for _ in range(max_len):
            logp = self._next_logp(seqs, frames_b, lengths_b, mem)
            logp = torch.where(done[:, None], pad_row[None], logp)
            cand = (scores.view(-1, 1) + logp).view(n, b * v)
            top, idx = cand.topk(b, dim=-1)
            src = (torch.arange(n, device=dev)[:, None] * b + idx // v).view(-1)
            tok = (idx % v).view(-1)
            hyp_len = hyp_len[src] + (~done[src]).long()
            done = done[src] | (tok == self.tokenizer.eos_id)
            seqs = torch.cat([seqs[src], tok[:, None]], 1)
            scores = top
            if bool(done.all()):
                break
        norm = scores / hyp_len.view(n, b).clamp(min=1).float() ** length_penalty
        best = norm.argmax(-1) + torch.arange(n, device=dev) * b
        return self._strip(seqs[best])

    def generate(self, frames: torch.Tensor, lengths: torch.Tensor, max_len: int | None = None, beam_size: int = 1,
                 length_penalty: float = 1.0, return_ids: bool = False):
        """Captions for encoder output ``frames`` (N, T, encoder_dim): greedy when beam_size == 1.

        Runs without dropout (modes restored afterwards). Returns list[str], or (list[str], list[list[int]]).
        """
        max_len = min(max_len or self.config.max_positions, self.config.max_positions)  # input never exceeds positions
        with eval_mode(self):
            if beam_size <= 1:
                ids = self.greedy_ids(frames, lengths, max_len)
            else:
                ids = self.beam_search_ids(frames, lengths, max_len, beam_size, length_penalty)
        texts = self.tokenizer.decode(ids)
        return (texts, ids) if return_ids else texts


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["DecoderConfig", "CaptionTokenizer", "CaptionDecoder", "decoder_param_count", "count_parameters",
           "eval_mode"]

