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
  seed-averaged per-clip scores (so clip sampling and, through the averaging, seed noise are both in it).
"""
from __future__ import annotations

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
    from sklearn.metrics import average_precision_score

    keep = y.sum(0) > 0  # classes without a positive have no AP
    if not keep.any():
        raise ValueError("mAP: no class has a positive clip in this split")
    return float(average_precision_score(y[:, keep], scores[:, keep], average="macro"))


def _batches(emb: Embeddings, order: np.ndarray, batch_size: int, max_frames: int, mean, std):
    lengths = np.minimum(emb.lengths(), max_frames)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        t = int(lengths[idx].max())
        x = torch.zeros(len(idx), t, emb.dim)
        for row, i in enumerate(idx):
            n = int(lengths[i])
            x[row, :n] = (torch.from_numpy(emb.frames_of(int(i))[:n].astype(np.float32)) - mean) / std
        yield idx, x, torch.from_numpy(lengths[idx].astype(np.int64))


def _predict(head: ProbeHead, emb: Embeddings, proto: ProbeProtocol, mean, std) -> np.ndarray:
    head.eval()
    out = np.zeros((len(emb), head.linear.out_features), dtype=np.float32)
    with torch.no_grad():
        for idx, x, lens in _batches(emb, np.arange(len(emb)), 256, proto.max_frames, mean, std):
            out[idx] = head(x, lens).numpy()
    return out


def _train(train: Embeddings, y: torch.Tensor, kind: str, pooling: str, num_classes: int, lr: float, wd: float,
           seed: int, proto: ProbeProtocol, mean, std) -> ProbeHead:
    torch.manual_seed(seed)
    head = ProbeHead(train.dim, num_classes, pooling, proto.dropout, proto.attention_heads)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=wd)
    per_epoch = -(-len(train) // proto.batch_size)
    epochs = max(proto.epochs, -(-proto.min_steps // per_epoch))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * per_epoch, pct_start=0.1)
    rng = np.random.default_rng(seed)
    head.train()
    for _ in range(epochs):
        for idx, x, lens in _batches(train, rng.permutation(len(train)), proto.batch_size, proto.max_frames, mean,
                                     std):
            logits = head(x, lens)
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
                 pooling: str = "mean", task: str = "", protocol: ProbeProtocol | None = None) -> LinearProbeResult:
    """The study's probe on one task (see the module docstring)."""
    proto = protocol or ProbeProtocol()
    if kind not in KINDS:
        raise ValueError(f"task {task!r}: kind={kind!r}; linear probing covers {KINDS}")
    y = {s: targets(e.labels, classes, kind, f"task {task!r} split {s!r}")
         for s, e in (("train", train), ("val", val), ("test", test))}
    if kind == "multiclass" and len(set(y["train"].tolist())) < 2:
        raise ValueError(f"task {task!r}: the train split has {len(set(y['train'].tolist()))} class(es); a probe "
                         "needs at least 2")
    mean, std = _standardiser(train)
    grid = []
    for lr, wd in itertools.product(proto.learning_rates, proto.weight_decays):
        head = _train(train, y["train"], kind, pooling, len(classes), lr, wd, proto.seeds[0], proto, mean, std)
        grid.append({"lr": lr, "weight_decay": wd,
                     "val": score(kind, _predict(head, val, proto, mean, std), y["val"].numpy())})
    best = max(grid, key=lambda g: g["val"])  # first best: the grid's order breaks ties
    per_seed, outputs = [], []
    for seed in proto.seeds:
        head = _train(train, y["train"], kind, pooling, len(classes), best["lr"], best["weight_decay"], seed, proto,
                      mean, std)
        logits = _predict(head, test, proto, mean, std)
        per_seed.append(score(kind, logits, y["test"].numpy()))
        outputs.append(logits)
    interval = bootstrap(kind, outputs, y["test"].numpy(), proto.n_boot)
    chance = 1.0 / len(classes) if kind == "multiclass" else float(y["test"].numpy().mean())
    return LinearProbeResult(task=task, kind=kind, pooling=pooling, metric="accuracy" if kind == "multiclass" else "mAP",
                             test=float(np.mean(per_seed)), test_per_seed=per_seed, interval=interval, val=best["val"],
                             setting={"lr": best["lr"], "weight_decay": best["weight_decay"]}, grid=grid,
                             n_train=len(train), n_val=len(val), n_test=len(test), chance=chance,
                             protocol=asdict(proto))


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
