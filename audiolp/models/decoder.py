"""Caption decoder: a Transformer decoder cross-attending to the frame-level audio encoder output.

Paper setting: 6 layers, d 768, 8 heads, FFN 3072, GELU, dropout 0.1, BART-base tokenizer
(``tokenizer="facebook/bart-base"``: <s>, </s>, <pad>, <mask>), captions up to 128 tokens (Auden): the
``DecoderConfig`` defaults. The offline tokenizer (``tokenizer="minilm"``, also ``CaptionTokenizer()``'s default) is
the WordPiece vocabulary of the shipped MiniLM ([CLS] = BOS, [SEP] = EOS, [PAD], [MASK]). Every size is a config
field.

The self-attention mask is built per sample, so one batch can mix autoregressive (causal) samples and
CapPa-style parallel samples (all inputs <mask>, no causal mask).

Generation is KV-cached by default (``DecoderCache``): the memory's cross-attention keys/values are projected once
per call, past tokens' self-attention keys/values are kept per layer, and each step runs the layers on the newest
token only, with the same layer weights as the full forward. ``use_cache=False`` re-runs the whole decoder over
all positions at every step (the reference).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from audiolp.models.pooling import valid_mask
from audiolp.models.text import OFFLINE_TEXT_MODEL, PAPER_CAPTION_TOKENIZER, load_tokenizer


@dataclass
class DecoderConfig:
    num_layers: int = 6
    d_model: int = 768
    num_heads: int = 8
    ffn_dim: int = 3072
    dropout: float = 0.1
    max_positions: int = 128  # longest decoder sequence (caption tokens incl. EOS); Auden: 128
    tie_embeddings: bool = True
    tokenizer: str = PAPER_CAPTION_TOKENIZER  # "facebook/bart-base"; offline: "minilm"


class CaptionTokenizer:
    """An HF tokenizer plus the four special ids the decoder needs.

    BART-style tokenizers give bos/eos directly; BERT-style ones have none, so [CLS] is BOS and [SEP] is EOS.
    """

    def __init__(self, name: str = OFFLINE_TEXT_MODEL):
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


@dataclass
class DecoderCache:
    """Key/value cache of one generate call over ``rows = samples * beams`` hypotheses (beams of a sample adjacent).

    Cross-attention keys/values are stored once per sample (beams of a sample share its memory); self-attention
    keys/values live in per-layer buffers preallocated for ``capacity`` positions, ``length`` of them filled.
    """

    self_k: list[torch.Tensor]  # per layer (rows, heads, capacity, head_dim)
    self_v: list[torch.Tensor]
    cross_k: list[torch.Tensor]  # per layer (samples, heads, T, head_dim)
    cross_v: list[torch.Tensor]
    memory_keep: torch.Tensor  # (samples, 1, 1, T) bool, True = a real frame (SDPA convention: True takes part)
    beams: int
    length: int = 0

    @property
    def capacity(self) -> int:
        return self.self_k[0].shape[2]

    def reorder(self, src: torch.Tensor) -> None:
        """Row r now continues row ``src[r]`` (beam re-selection). ``src`` must keep rows within their sample,
        which beam search does by construction, because the cross-attention cache is per sample."""
        t = self.length
        for buf in (*self.self_k, *self.self_v):
            buf[:, :, :t] = buf[src, :, :t]


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
        layers = [nn.TransformerDecoderLayer(d, cfg.num_heads, cfg.ffn_dim, cfg.dropout, activation="gelu",
                                             batch_first=True, norm_first=True) for _ in range(cfg.num_layers)]
        self.layers = nn.TransformerDecoder(layers[0], cfg.num_layers)
        # nn.TransformerDecoder deep-copies its one layer, so every layer would start with identical weights; put
        # the independently initialised layers in place (same module path, so state_dict keys are unchanged).
        self.layers.layers = nn.ModuleList(layers)
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
        return self.output_logits(self.hidden(tokens, frames, lengths, causal, token_pad, memory))

    def output_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final hidden states (..., d) -> logits (..., vocab): the tied embedding (+ bias) or ``lm_head``.
        Applied to a subset of positions (e.g. only the non-padding targets) it gives those rows of ``forward``."""
        if self.lm_head is None:
            return F.linear(hidden, self.tok_emb.weight, self.out_bias)
        return self.lm_head(hidden)

    def hidden(self, tokens: torch.Tensor, frames: torch.Tensor, lengths: torch.Tensor,
               causal: torch.Tensor | None = None, token_pad: torch.Tensor | None = None,
               memory: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Like ``forward`` but stops before the output projection: final-normed states (N, L, d)."""
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
        return self.final_norm(x)

    # ---- incremental (KV-cached) decoding ----------------------------------------------------------------------
    def init_cache(self, frames: torch.Tensor, lengths: torch.Tensor, beams: int = 1,
                   capacity: int | None = None) -> DecoderCache:
        """Project the memory and its cross-attention keys/values once; room for ``capacity`` decoder positions
        (default ``max_positions``) for ``frames.shape[0] * beams`` rows."""
        cfg = self.config
        # Positions past max_positions have no embedding: a longer request fails at that step, as forward would.
        capacity = min(capacity or cfg.max_positions, cfg.max_positions)
        h, hd = cfg.num_heads, cfg.d_model // cfg.num_heads
        mem, mem_pad = self.encode_memory(frames, lengths)
        n, t, d = mem.shape
        cross_k, cross_v = [], []
        for layer in self.layers.layers:
            att = layer.multihead_attn
            # Rows d:2d and 2d:3d of the packed in-projection are the key and value projections (as MHA splits them).
            kv = F.linear(mem, att.in_proj_weight[d:], att.in_proj_bias[d:])
            k, v = kv.view(n, t, 2, h, hd).permute(2, 0, 3, 1, 4)
            cross_k.append(k.contiguous())
            cross_v.append(v.contiguous())
        rows = n * beams
        dtype = cross_k[0].dtype
        buf = lambda: torch.empty(rows, h, capacity, hd, dtype=dtype, device=mem.device)  # noqa: E731
        return DecoderCache(self_k=[buf() for _ in cross_k], self_v=[buf() for _ in cross_k], cross_k=cross_k,
                            cross_v=cross_v, memory_keep=~mem_pad.view(n, 1, 1, t), beams=beams)

    def decode_step(self, tokens: torch.Tensor, cache: DecoderCache) -> torch.Tensor:
        """Feed the newest token of every row (rows,) at position ``cache.length`` -> next-token logits (rows, vocab).

        Same function as the last position of ``forward`` on the whole prefix (causal, no padding), without
        dropout: the layers' own submodules (self_attn, multihead_attn, linear1/2, norm1/2/3) are applied to one
        position, attending to the cached keys/values.
        """
        cfg = self.config
        pos = cache.length
        if pos >= cache.capacity:
            raise ValueError(f"decode_step: cache full ({cache.capacity} positions); init_cache with more capacity")
        rows, d, h = tokens.shape[0], cfg.d_model, cfg.num_heads
        hd, n, b = d // h, cache.memory_keep.shape[0], cache.beams
        x = self.tok_emb(tokens) + self.pos_emb.weight[pos]  # (rows, d)
        for i, layer in enumerate(self.layers.layers):
            # Self-attention: the new token's key/value go into the cache; its query sees positions 0..pos.
            att = layer.self_attn
            q, k, v = F.linear(layer.norm1(x), att.in_proj_weight, att.in_proj_bias).view(rows, 3, h, 1, hd).unbind(1)
            cache.self_k[i][:, :, pos: pos + 1] = k
            cache.self_v[i][:, :, pos: pos + 1] = v
            a = F.scaled_dot_product_attention(q, cache.self_k[i][:, :, : pos + 1], cache.self_v[i][:, :, : pos + 1])
            x = x + att.out_proj(a.reshape(rows, d))
            # Cross-attention: the beams of a sample act as that sample's queries over its one cached memory.
            att = layer.multihead_attn
            q = F.linear(layer.norm2(x), att.in_proj_weight[:d], att.in_proj_bias[:d]).view(n, b, h, hd).transpose(1, 2)
            a = F.scaled_dot_product_attention(q, cache.cross_k[i], cache.cross_v[i], attn_mask=cache.memory_keep)
            x = x + att.out_proj(a.transpose(1, 2).reshape(rows, d))
            x = x + layer.linear2(layer.activation(layer.linear1(layer.norm3(x))))
        cache.length = pos + 1
        return self.output_logits(self.final_norm(x))

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

    def _logp(self, logits: torch.Tensor) -> torch.Tensor:
        """Next-token logits (rows, vocab) -> float32 log-probabilities; BOS, PAD and MASK are never generated."""
        logits = logits.float()
        tk = self.tokenizer
        banned = [i for i in {tk.bos_id, tk.pad_id, tk.mask_id} if i != tk.eos_id]
        logits[:, banned] = float("-inf")
        return logits.log_softmax(-1)

    def _next_logp(self, seqs, frames, lengths, mem) -> torch.Tensor:
        """Reference (uncached) step: the whole decoder over every position of ``seqs``, last position kept."""
        logits = self(seqs, frames, lengths, token_pad=torch.zeros_like(seqs, dtype=torch.bool), memory=mem)
        return self._logp(logits[:, -1])

    def _stepper(self, frames, lengths, beams: int, max_len: int, use_cache: bool):
        """-> (step, reorder): step(seqs (rows, t)) gives next-token log-probs; reorder(src) follows beam
        re-selection. Cached: feeds only seqs[:, -1]. Uncached: re-runs everything on the whole of seqs."""
        if use_cache:
            cache = self.init_cache(frames, lengths, beams, capacity=max_len)

            def step(seqs):
                if seqs.shape[1] != cache.length + 1:
                    raise RuntimeError(f"decode cache holds {cache.length} positions, sequence has {seqs.shape[1]}")
                return self._logp(self.decode_step(seqs[:, -1], cache))
            return step, cache.reorder
        if beams > 1:
            frames, lengths = frames.repeat_interleave(beams, 0), lengths.repeat_interleave(beams, 0)
        mem = self.encode_memory(frames, lengths)
        return (lambda seqs: self._next_logp(seqs, frames, lengths, mem)), (lambda src: None)

    @torch.no_grad()
    def greedy_ids(self, frames: torch.Tensor, lengths: torch.Tensor, max_len: int,
                   use_cache: bool = True) -> list[list[int]]:
        n = frames.shape[0]
        with eval_mode(self):
            step, _ = self._stepper(frames, lengths, 1, max_len, use_cache)
            seqs = torch.full((n, 1), self.tokenizer.bos_id, dtype=torch.long, device=frames.device)
            done = torch.zeros(n, dtype=torch.bool, device=frames.device)
            for _ in range(max_len):
                nxt = step(seqs).argmax(-1)
                nxt = torch.where(done, torch.full_like(nxt, self.tokenizer.pad_id), nxt)
                seqs = torch.cat([seqs, nxt[:, None]], 1)
                done |= nxt == self.tokenizer.eos_id
                if bool(done.all()):
                    break
        return self._strip(seqs)

    @torch.no_grad()
    def beam_search_ids(self, frames: torch.Tensor, lengths: torch.Tensor, max_len: int, beam_size: int = 4,
                        length_penalty: float = 1.0, use_cache: bool = True) -> list[list[int]]:
        """Beam search; a finished beam keeps its score and only extends with padding. The final pick divides
        the log-probability by (length incl. EOS) ** length_penalty."""
        n, b, v = frames.shape[0], beam_size, self.vocab_size
        dev = frames.device
        with eval_mode(self):
            step, reorder = self._stepper(frames, lengths, b, max_len, use_cache)
            seqs = torch.full((n * b, 1), self.tokenizer.bos_id, dtype=torch.long, device=dev)
            scores = torch.full((n, b), float("-inf"), device=dev)
            scores[:, 0] = 0.0  # all beams start identical: only beam 0 may expand at step 1
            done = torch.zeros(n * b, dtype=torch.bool, device=dev)
            hyp_len = torch.zeros(n * b, dtype=torch.long, device=dev)
            pad_row = torch.full((v,), float("-inf"), device=dev)
            pad_row[self.tokenizer.pad_id] = 0.0
            for _ in range(max_len):
                logp = step(seqs)
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
                reorder(src)
        norm = scores / hyp_len.view(n, b).clamp(min=1).float() ** length_penalty
        best = norm.argmax(-1) + torch.arange(n, device=dev) * b
        return self._strip(seqs[best])

    def generate(self, frames: torch.Tensor, lengths: torch.Tensor, max_len: int | None = None, beam_size: int = 1,
                 length_penalty: float = 1.0, return_ids: bool = False, use_cache: bool = True):
        """Captions for encoder output ``frames`` (N, T, encoder_dim): greedy when beam_size == 1.

        Runs without dropout (modes restored afterwards). ``use_cache=False`` recomputes the whole prefix at every
        step (reference; same ids up to float rounding). Returns list[str], or (list[str], list[list[int]]).
        """
        max_len = min(max_len or self.config.max_positions, self.config.max_positions)  # input never exceeds positions
        with eval_mode(self):
            if beam_size <= 1:
                ids = self.greedy_ids(frames, lengths, max_len, use_cache=use_cache)
            else:
                ids = self.beam_search_ids(frames, lengths, max_len, beam_size, length_penalty, use_cache=use_cache)
        texts = self.tokenizer.decode(ids)
        return (texts, ids) if return_ids else texts


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["DecoderConfig", "CaptionTokenizer", "CaptionDecoder", "DecoderCache", "decoder_param_count",
           "count_parameters", "eval_mode"]

