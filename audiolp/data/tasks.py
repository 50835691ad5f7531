"""Downstream task data model: a task registry (JSON) naming each task's kind, metric, labels and split manifests.

A registry file looks like ``{"version": 1, "tasks": {name: {kind, metric, labels, splits, description, domain}}}``;
split manifests are lhotse cut manifests whose paths are relative to the registry file's folder.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lhotse import CutSet

from audiolp.files import read_json

TASK_KINDS = ("multiclass", "multilabel", "sed", "retrieval")
REGISTRY_VERSION = 1


class TaskRegistryError(ValueError):
    """A task registry entry is missing a field or holds an invalid value."""


@dataclass
class TaskSpec:
    name: str
    kind: str  # "multiclass" | "multilabel" | "sed" | "retrieval"
    metric: str  # "accuracy" | "mAP" | "segment_f1" | "R@k" ...
    labels: list[str] = field(default_factory=list)
    splits: dict[str, str] = field(default_factory=dict)  # split -> manifest path relative to the registry file
    description: str = ""
    domain: str = ""

    def __post_init__(self):
        if self.kind not in TASK_KINDS:
            raise TaskRegistryError(f"task {self.name!r}: field 'kind'={self.kind!r}; use one of {TASK_KINDS}")
        if not self.splits:
            raise TaskRegistryError(f"task {self.name!r}: field 'splits' is empty; give at least a 'test' manifest")
        if self.kind != "retrieval" and not self.labels:
            raise TaskRegistryError(f"task {self.name!r}: field 'labels' is empty; a {self.kind} task needs its label set")


def write_task_registry(specs: dict[str, TaskSpec] | list[TaskSpec], path: str | os.PathLike) -> Path:
    """Write the registry atomically (tmp file + rename)."""
    path = Path(path)
    if isinstance(specs, dict):
        specs = list(specs.values())
    data = {"version": REGISTRY_VERSION, "tasks": {s.name: {k: v for k, v in asdict(s).items() if k != "name"} for s in specs}}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False))
    os.replace(tmp, path)
    return path


def load_task_registry(path: str | os.PathLike) -> dict[str, TaskSpec]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"task registry {path} does not exist; build MiniStew (audiolp prepare ministew) first")
    data = read_json(path, "rebuild the registry", error=TaskRegistryError)
    tasks = data.get("tasks")
    if not isinstance(tasks, dict):
        raise TaskRegistryError(f"{path}: field 'tasks' missing or not an object")
    out = {}
    for name, entry in tasks.items():
        missing = [k for k in ("kind", "metric", "splits") if k not in entry]
        if missing:
            raise TaskRegistryError(f"{path}: task {name!r} lacks field(s) {missing}")
        out[name] = TaskSpec(name=name, **{k: entry[k] for k in ("kind", "metric", "labels", "splits", "description", "domain")
                                           if k in entry})
    return out


def load_task_split(spec: TaskSpec, split: str, root: str | os.PathLike) -> CutSet:
    """Cuts of one split; ``root`` is the folder holding the registry file."""
    if split not in spec.splits:
        raise KeyError(f"task {spec.name!r} has no split {split!r}; it has {sorted(spec.splits)}")
    p = Path(root) / spec.splits[split]
    if not p.exists():
        raise FileNotFoundError(f"task {spec.name!r} split {split!r}: manifest {p} is missing; rebuild the task data")
    return CutSet.from_file(p)
