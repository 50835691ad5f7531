"""Linear probes on frozen embeddings, and intervals for what they score.

``logistic_probe`` is the reference probe: each clip is the per-channel mean and standard deviation of its frames,
standardised, then a multinomial logistic regression (scikit-learn) whose inverse regularisation C is picked on
the validation split; test accuracy comes with a bootstrap interval over test clips.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from audiolp.eval.embed import Embeddings

DEFAULT_CS = (0.01, 0.1, 1.0, 10.0)


@dataclass
class ProbeResult:
    task: str
    metric: str  # "accuracy"
    test: float
    val: float
    chance: float
    setting: dict  # the hyperparameters chosen on val
    test_correct: np.ndarray = field(repr=False)  # (n_test,) per-clip score (1/0 for accuracy)
    n_train: int = 0
    n_val: int = 0
    n_test: int = 0

    def interval(self, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float]:
        return bootstrap_interval([self.test_correct], n_boot=n_boot, seed=seed, alpha=alpha)


def class_indices(labels: list[list[str]], classes: list[str], task: str, split: str) -> np.ndarray:
    """Each clip's class index (its first label) in ``classes``; a label outside them is an error naming it."""
    index = {c: i for i, c in enumerate(classes)}
    out = np.empty(len(labels), dtype=np.int64)
    for i, labs in enumerate(labels):
        if not labs or labs[0] not in index:
            raise ValueError(f"task {task!r} split {split!r}: clip {i} has label {labs[:1]} outside the task's "
                             f"{len(classes)} classes; fix the task's labels or its manifest")
        out[i] = index[labs[0]]
    return out


def logistic_probe(train: Embeddings, val: Embeddings, test: Embeddings, classes: list[str], task: str = "",
                   Cs=DEFAULT_CS, max_iter: int = 2000) -> ProbeResult:
    """Multiclass accuracy of the reference probe (see the module docstring)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = {s: e.mean_std() for s, e in (("train", train), ("val", val), ("test", test))}
    y = {s: class_indices(e.labels, classes, task, s) for s, e in (("train", train), ("val", val), ("test", test))}
    if len(set(y["train"].tolist())) < 2:
        raise ValueError(f"task {task!r}: the train split has {len(set(y['train'].tolist()))} class(es); a probe "
                         "needs at least 2")
    best = None
    for C in Cs:
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
        clf.fit(x["train"], y["train"])
        score = float((clf.predict(x["val"]) == y["val"]).mean())
        if best is None or score > best[0]:  # ties keep the stronger regularisation (smaller C, listed first)
            best = (score, C, clf)
    score, C, clf = best
    correct = (clf.predict(x["test"]) == y["test"]).astype(np.float64)
    return ProbeResult(task=task, metric="accuracy", test=float(correct.mean()), val=score,
                       chance=1.0 / len(classes), setting={"C": C}, test_correct=correct,
                       n_train=len(train), n_val=len(val), n_test=len(test))


def bootstrap_interval(per_item: list[np.ndarray], n_boot: int = 2000, seed: int = 0,
                       alpha: float = 0.05) -> tuple[float, float]:
    """Percentile interval of the mean over tasks of each task's mean per-item score, resampling every task's
    items (with replacement, independently) ``n_boot`` times. One task: the usual bootstrap of its mean."""
    rng = np.random.default_rng(seed)
    reps = np.zeros(n_boot)
    for items in per_item:
        items = np.asarray(items, dtype=np.float64)
        if items.size == 0:
            raise ValueError("bootstrap_interval: a task has no test items")
        idx = rng.integers(0, items.size, size=(n_boot, items.size))
        reps += items[idx].mean(axis=1)
    reps /= len(per_item)
    return float(np.quantile(reps, alpha / 2)), float(np.quantile(reps, 1 - alpha / 2))


def probe_registry(encoder, registry_path, cache, tasks: list[str] | None = None,
                   Cs=DEFAULT_CS) -> list[ProbeResult]:
    """The reference probe on every multiclass task of a task registry (e.g. MiniBench's tasks.json), or on
    ``tasks``; embeddings come from (and go to) ``cache``."""
    from pathlib import Path

    from audiolp.data.tasks import load_task_registry, load_task_split

    registry_path = Path(registry_path)
    registry = load_task_registry(registry_path)
    names = tasks or [n for n, spec in registry.items() if spec.kind == "multiclass"]
    unknown = sorted(set(names) - set(registry))
    if unknown:
        raise ValueError(f"unknown task(s) {unknown} in {registry_path}; it has {sorted(registry)}")
    results = []
    for name in names:
        spec = registry[name]
        if spec.kind != "multiclass":
            raise ValueError(f"task {name!r} is {spec.kind}; the reference probe covers multiclass tasks")
        emb = {split: cache.get(encoder, load_task_split(spec, split, registry_path.parent), name=f"{name}/{split}")
               for split in ("train", "val", "test")}
        results.append(logistic_probe(emb["train"], emb["val"], emb["test"], spec.labels, task=name, Cs=Cs))
    return results
