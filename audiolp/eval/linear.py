"""Linear probing on a frozen encoder: the study's protocol (mean or attention pooling + a linear head on cached
frames), for multiclass (accuracy, cross-entropy) and multilabel (mAP, binary cross-entropy) tasks.

Protocol (``ProbeProtocol``; where the paper is silent, the authors' framework decides):
- frames are standardised with the train split's per-channel mean and std;
- ``mean``: Dropout(0.1) + Linear on every frame, logits averaged over the valid frames (Auden
  audio_tag/scripts/linear_probing.sh); ``attention``: multi-head attention pooling with a learned query, then
  Dropout(0.1) + Linear, trained together;
- AdamW, full passes over the train split in mini-batches, a small grid of learning rate x weight decay; the
  setting with the best val score is retrained with ``seeds`` seeds;
- test is reported as the mean over seeds, with a 95% interval from a bootstrap over test clips of the
  seed-averaged per-clip scores: it reflects which clips were drawn; seed-to-seed variation is averaged out
  rather than added (``test_per_seed`` shows it), and the record keeps the per-clip scores for paired comparisons;
- probes run on one torch thread by default (``threads``): their ops are small, and on a few cores shared with
  other work more threads only contend.

How ``mean`` is computed: the head is linear, so averaging per-frame logits over a clip's T valid frames is the
linear map of the clip's mean frame (exact; this is how val and test are scored). In training, Dropout(p) on the
frames before that average turns into noise on the mean frame: channel c gets
mean_t(d_tc x_tc) - mean_t(x_tc), with d_tc = Bernoulli(1 - p) / (1 - p) independent, i.e. zero-mean noise of
variance p / (1 - p) * mean_t(x_tc^2) / T, independent across channels and clips. The probe trains on the
precomputed mean frames plus Gaussian noise of exactly that variance (the sum over T frames is close to Gaussian
for the clip lengths of MiniBench: tens to hundreds of frames), so one step is a linear layer on a (batch, D)
matrix instead of (batch, T, D) frames. Same optimiser, schedule, batches, grid and seeds as per-frame
dropout; the numbers differ from the per-frame implementation only through the noise (its draws, and its shape
beyond the first two moments): on MiniBench (tiny encoder, 7 tasks) at most .004 per task, the same settings
chosen (BENCHMARKS.md, "Evaluating one checkpoint on all of MiniBench"). ``attention`` still sees every frame; its
batches are gathered from the split's frames standardised once (bit-identical to padding clip by clip).
"""
from __future__ import annotations

import contextlib
import itertools
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from audiolp.eval.embed import Embeddings
from audiolp.models.pooling import AttentionPooling, valid_mask

POOLINGS = ("mean", "attention")
KINDS = ("multiclass", "multilabel")


@dataclass
class ProbeProtocol:
    learning_rates: tuple[float, ...] = (1e-3, 1e-2)
    weight_decays: tuple[float, ...] = (1e-4, 1e-2)
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 40
    min_steps: int = 400  # small train splits get more epochs, so that every probe takes at least this many steps
    batch_size: int = 64
    dropout: float = 0.1
    attention_heads: int = 4
    max_frames: int = 1024  # longer clips are cut (25 Hz: ~41 s); keeps padded batches bounded
    n_boot: int = 2000

    def __post_init__(self):
        if not self.seeds or not self.learning_rates or not self.weight_decays:
            raise ValueError("ProbeProtocol: seeds, learning_rates and weight_decays must each hold at least one value")


class ProbeHead(nn.Module):
    def __init__(self, dim: int, num_classes: int, pooling: str, dropout: float, heads: int):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling={pooling!r}; use one of {POOLINGS}")
        self.pooling = pooling
        # The most heads (up to ``heads``) that divide the embedding width (e.g. 80-d fbank frames: 4).
        heads = max(h for h in range(1, heads + 1) if dim % h == 0)
        self.attn = AttentionPooling(dim, num_heads=heads) if pooling == "attention" else None
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(dim, num_classes)

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.attn is not None:
            return self.linear(self.dropout(self.attn(frames, lengths)))
        logits = self.linear(self.dropout(frames))  # (N, T, C): per-frame logits, averaged over valid frames
        mask = valid_mask(lengths, frames.shape[1]).unsqueeze(-1).to(logits.dtype)
        return (logits * mask).sum(1) / mask.sum(1).clamp(min=1.0)


@dataclass
class LinearProbeResult:
    task: str
    kind: str
    pooling: str
    metric: str  # "accuracy" | "mAP"
    test: float  # mean over seeds
    test_per_seed: list[float]
    interval: tuple[float, float]
    val: float  # of the chosen setting (seed 0)
    setting: dict  # chosen learning rate and weight decay
    grid: list[dict] = field(default_factory=list)  # val score of every setting tried
    n_train: int = 0
    n_val: int = 0
    n_test: int = 0
    chance: float = 0.0
    protocol: dict = field(default_factory=dict)
    # multiclass: each test clip's correctness averaged over seeds (for intervals pooled over tasks, as
    # ``audiolp.eval.probe.bootstrap_interval``); not part of the results record
    test_correct: np.ndarray | None = field(default=None, repr=False)


def targets(labels: list[list[str]], classes: list[str], kind: str, where: str) -> torch.Tensor:
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({lab for labs in labels for lab in labs if lab not in index})
    if unknown:
        raise ValueError(f"{where}: label(s) {unknown[:5]} are not among the task's {len(classes)} classes; fix the "
                         "task's labels or its manifest")
    if kind == "multiclass":
        if any(not labs for labs in labels):
            raise ValueError(f"{where}: a clip has no label; a multiclass task needs one per clip")
        return torch.tensor([index[labs[0]] for labs in labels])
    y = torch.zeros(len(labels), len(classes))
    for i, labs in enumerate(labels):
        y[i, [index[lab] for lab in labs]] = 1.0
    return y


def score(kind: str, logits: np.ndarray, y: np.ndarray) -> float:
    """Accuracy (multiclass) or mAP (multilabel: macro over the classes with a positive clip)."""
    if kind == "multiclass":
        return float((logits.argmax(1) == y).mean())
    return mean_average_precision(logits, y)


def mean_average_precision(scores: np.ndarray, y: np.ndarray) -> float:
    """Macro average precision over the classes with a positive clip: sklearn's ``average_precision_score``
    (step-wise, tied scores form one threshold), computed for all classes at once."""
    y = np.asarray(y)
    keep = y.sum(0) > 0  # classes without a positive have no AP
    if not keep.any():
        raise ValueError("mAP: no class has a positive clip in this split")
    s, y = np.asarray(scores)[:, keep], (y[:, keep] > 0)
    order = np.argsort(-s, axis=0, kind="mergesort")
    s, y = np.take_along_axis(s, order, 0), np.take_along_axis(y, order, 0)
    tps = np.cumsum(y, axis=0, dtype=np.float64)
    last = np.ones_like(s, dtype=bool)  # the last clip of each run of tied scores is a threshold
    last[:-1] = s[:-1] != s[1:]
    at = np.where(last, tps, 0.0)
    before = np.vstack([np.zeros((1, s.shape[1])), np.maximum.accumulate(at, axis=0)[:-1]])  # tps at the previous
    precision = tps / np.arange(1, len(s) + 1)[:, None]
    ap = np.where(last, (tps - before) * precision, 0.0).sum(0) / tps[-1]
    return float(ap.mean())


class _Split:
    """A split's frames standardised once (float32, clips cut to ``max_frames``, concatenated), with what the
    probes read from them: padded batches gathered in one op (attention), and per-clip mean frames and
    dropout-noise scales (mean)."""

    def __init__(self, emb: Embeddings, max_frames: int, mean: torch.Tensor, std: torch.Tensor):
        lens = np.minimum(emb.lengths(), max_frames).astype(np.int64)
        starts = emb.offsets[:-1].astype(np.int64)
        if (lens == emb.lengths()).all():
            frames = emb.frames
        else:  # keep the first max_frames of every clip
            keep = np.concatenate([np.arange(s, s + n) for s, n in zip(starts, lens)] or [np.zeros(0, np.int64)])
            frames = emb.frames[keep]
            starts = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
        self.frames = (torch.from_numpy(frames.astype(np.float32)) - mean) / std  # (sum of T_i, D)
        self.lengths = torch.from_numpy(lens)
        self.starts = torch.from_numpy(starts)
        self.n, self.dim = len(emb), int(self.frames.shape[1])

    def batch(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, D) frames of clips ``idx``, zero-padded to the longest, and (B,) lengths."""
        idx = torch.from_numpy(np.asarray(idx, dtype=np.int64))
        lens = self.lengths[idx]
        t = int(lens.max()) if len(idx) else 0
        valid = torch.arange(t)[None, :] < lens[:, None]
        rows = torch.where(valid, self.starts[idx, None] + torch.arange(t)[None, :], 0)
        x = self.frames[rows.reshape(-1)].reshape(len(idx), t, self.dim)
        return x.masked_fill_(~valid[..., None], 0.0), lens

    def clip_means(self, dropout: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, D) mean frame of every clip, and (N, D) the standard deviation that Dropout(``dropout``) on the
        frames adds to it (see the module docstring): sqrt(p / (1 - p) * mean_t(x_t^2) / T)."""
        seg = torch.repeat_interleave(torch.arange(self.n), self.lengths)
        t = self.lengths.clamp(min=1).to(torch.float32)[:, None]
        total = torch.zeros(self.n, self.dim).index_add_(0, seg, self.frames)
        squares = torch.zeros(self.n, self.dim).index_add_(0, seg, self.frames.square())
        mean = total / t
        keep = 1.0 - dropout
        noise = (dropout / keep * squares / t / t).sqrt() if 0.0 < dropout < 1.0 else torch.zeros_like(mean)
        return mean, noise


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run the block on ``n`` intra-op threads (None: leave torch's setting), then restore the setting."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _head_input(split: _Split, pooling: str, dropout: float):
    return split.clip_means(dropout) if pooling == "mean" else split


def _forward(head: ProbeHead, data, idx: np.ndarray, train: bool) -> torch.Tensor:
    if head.pooling == "mean":  # data = (mean frames, dropout-noise std); see the module docstring
        means, noise = data
        tidx = torch.from_numpy(idx)
        z = means[tidx]
        if train and head.dropout.p > 0:
            z = z + torch.randn_like(z) * noise[tidx]
        return head.linear(z)
    x, lens = data.batch(idx)
    return head(x, lens)


def _predict(head: ProbeHead, data, n: int) -> np.ndarray:
    head.eval()
    out = np.zeros((n, head.linear.out_features), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, n, 256):
            idx = np.arange(start, min(n, start + 256))
            out[idx] = _forward(head, data, idx, train=False).numpy()
    return out


def _train(data, n: int, dim: int, y: torch.Tensor, kind: str, pooling: str, num_classes: int, lr: float,
           wd: float, seed: int, proto: ProbeProtocol) -> ProbeHead:
    torch.manual_seed(seed)
    head = ProbeHead(dim, num_classes, pooling, proto.dropout, proto.attention_heads)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=wd)
    per_epoch = -(-n // proto.batch_size)
    epochs = max(proto.epochs, -(-proto.min_steps // per_epoch))
    total = epochs * per_epoch
    # 10% warm-up; at least 2 steps, so that a short probe (a smoke test) never gets a zero-length phase.
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(total, 4),
                                                pct_start=max(0.1, 2.0 / max(total, 4)))
    rng = np.random.default_rng(seed)
    head.train()
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, proto.batch_size):
            idx = order[start:start + proto.batch_size]
            logits = _forward(head, data, idx, train=True)
            target = y[torch.from_numpy(idx)]
            loss = (F.cross_entropy(logits, target) if kind == "multiclass"
                    else F.binary_cross_entropy_with_logits(logits, target))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return head


def _standardiser(train: Embeddings) -> tuple[torch.Tensor, torch.Tensor]:
    x = train.frames.astype(np.float32)
    return torch.from_numpy(x.mean(0)), torch.from_numpy(x.std(0) + 1e-5)


def linear_probe(train: Embeddings, val: Embeddings, test: Embeddings, classes: list[str], kind: str = "multiclass",
                 pooling: str = "mean", task: str = "", protocol: ProbeProtocol | None = None,
                 threads: int | None = 1) -> LinearProbeResult:
    """The study's probe on one task (see the module docstring); ``threads``: torch intra-op threads while it
    trains (None: torch's current setting)."""
    with torch_threads(threads):
        return _linear_probe(train, val, test, classes, kind, pooling, task, protocol or ProbeProtocol())


def _linear_probe(train: Embeddings, val: Embeddings, test: Embeddings, classes: list[str], kind: str,
                  pooling: str, task: str, proto: ProbeProtocol) -> LinearProbeResult:
    if kind not in KINDS:
        raise ValueError(f"task {task!r}: kind={kind!r}; linear probing covers {KINDS}")
    y = {s: targets(e.labels, classes, kind, f"task {task!r} split {s!r}")
         for s, e in (("train", train), ("val", val), ("test", test))}
    if kind == "multiclass" and len(set(y["train"].tolist())) < 2:
        raise ValueError(f"task {task!r}: the train split has {len(set(y['train'].tolist()))} class(es); a probe "
                         "needs at least 2")
    if pooling not in POOLINGS:
        raise ValueError(f"pooling={pooling!r}; use one of {POOLINGS}")
    mean, std = _standardiser(train)
    data = {s: _head_input(_Split(e, proto.max_frames, mean, std), pooling, proto.dropout)
            for s, e in (("train", train), ("val", val), ("test", test))}

    def fit(lr: float, wd: float, seed: int) -> ProbeHead:
        return _train(data["train"], len(train), train.dim, y["train"], kind, pooling, len(classes), lr, wd, seed,
                      proto)

    grid = []
    for lr, wd in itertools.product(proto.learning_rates, proto.weight_decays):
        head = fit(lr, wd, proto.seeds[0])
        grid.append({"lr": lr, "weight_decay": wd,
                     "val": score(kind, _predict(head, data["val"], len(val)), y["val"].numpy())})
    best = max(grid, key=lambda g: g["val"])  # first best: the grid's order breaks ties
    per_seed, outputs = [], []
    for seed in proto.seeds:
        head = fit(best["lr"], best["weight_decay"], seed)
        logits = _predict(head, data["test"], len(test))
        per_seed.append(score(kind, logits, y["test"].numpy()))
        outputs.append(logits)
    interval = bootstrap(kind, outputs, y["test"].numpy(), proto.n_boot)
    chance = 1.0 / len(classes) if kind == "multiclass" else float(y["test"].numpy().mean())
    return LinearProbeResult(task=task, kind=kind, pooling=pooling, metric="accuracy" if kind == "multiclass" else "mAP",
                             test=float(np.mean(per_seed)), test_per_seed=per_seed, interval=interval, val=best["val"],
                             setting={"lr": best["lr"], "weight_decay": best["weight_decay"]}, grid=grid,
                             n_train=len(train), n_val=len(val), n_test=len(test), chance=chance,
                             protocol=asdict(proto),
                             test_correct=(np.mean([o.argmax(1) == y["test"].numpy() for o in outputs], axis=0)
                                           if kind == "multiclass" else None))


def bootstrap(kind: str, outputs: list[np.ndarray], y: np.ndarray, n_boot: int, seed: int = 0,
              alpha: float = 0.05) -> tuple[float, float]:
    """95% interval of the seed-averaged test score: test clips resampled with replacement, the metric recomputed."""
    rng = np.random.default_rng(seed)
    n = len(y)
    reps = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, size=n)
        if kind == "multiclass":
            reps.append(np.mean([(o[idx].argmax(1) == y[idx]).mean() for o in outputs]))
        else:
            if not (y[idx].sum(0) > 0).any():
                continue
            reps.append(np.mean([mean_average_precision(o[idx], y[idx]) for o in outputs]))
    return float(np.quantile(reps, alpha / 2)), float(np.quantile(reps, 1 - alpha / 2))
