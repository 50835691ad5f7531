"""JupyterLab explorers for what a person would rather hear than read (ipywidgets; clicks need the ipympl backend:
run ``%matplotlib widget`` first).

    from audiolp.study.widgets import tsne_explorer, retrieval_explorer
    tsne_explorer(study)                       # the clip map of 05: click a point, hear the clip, see its captions
    retrieval_explorer(study, "contrastive@full")  # pick a caption or a clip, hear the nearest clips / read captions

The data behind each view (``ClipIndex``, ``nearest``) is plain Python and tested; the widgets only display it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class ClipIndex:
    """Clip id -> audio file, captions, label (from the task registry's manifests)."""

    audio: dict[str, str]
    captions: dict[str, list[str]]

    @classmethod
    def from_registry(cls, registry: str | Path, splits=("test",)) -> "ClipIndex":
        from audiolp.data.schema import cut_captions
        from audiolp.data.tasks import load_task_registry, load_task_split

        registry = Path(registry)
        audio, captions = {}, {}
        for spec in load_task_registry(registry).values():
            for split in splits:
                if split not in spec.splits:
                    continue
                for cut in load_task_split(spec, split, registry.parent):
                    if cut.has_recording and cut.recording.sources:
                        audio[cut.id] = str(cut.recording.sources[0].source)
                    captions[cut.id] = list(cut_captions(cut))
        return cls(audio, captions)

    def clip(self, cut_id: str) -> tuple[str | None, list[str]]:
        return self.audio.get(cut_id), self.captions.get(cut_id, [])


def nearest(query: np.ndarray, keys: np.ndarray, k: int = 5) -> list[tuple[int, float]]:
    """Indices and cosine similarities of the ``k`` rows of ``keys`` closest to ``query``, best first."""
    q = query / (np.linalg.norm(query) + 1e-12)
    kn = keys / (np.linalg.norm(keys, axis=1, keepdims=True) + 1e-12)
    sims = kn @ q
    order = np.argsort(-sims, kind="stable")[:k]
    return [(int(i), float(sims[i])) for i in order]


def nearest_point(x: float, y: float, xs, ys) -> int:
    """The index of the map point closest to a click at (x, y)."""
    return int(np.argmin((np.asarray(xs) - x) ** 2 + (np.asarray(ys) - y) ** 2))


def embed_task(study, encoder: str, task: str = "retrieval") -> dict:
    """Clip and caption embeddings of a retrieval task's test split by a contrastive run's own heads (``encoder`` is
    a run name of the study, e.g. "contrastive@full", or a run dir): {"clip_ids", "audio", "captions", "text"}."""
    from audiolp.data.tasks import load_task_registry, load_task_split
    from audiolp.eval.embed import EmbeddingCache
    from audiolp.eval.retrieval import caption_index, embed_audio, embed_texts, load_run_objective, run_objective_name
    from audiolp.study.analysis import parse_run_name

    run_dir = Path(encoder)
    if not run_dir.is_dir():
        objective, init, scale = parse_run_name(encoder)
        run_dir = study.pretrain(objective, scale or "full", init)
    if run_objective_name(run_dir) != "contrastive":
        raise ValueError(f"{encoder}: the explorer uses a contrastive run's own audio and text heads; give a "
                         "contrastive run (its LiT-aligned heads live with the retrieval records)")
    objective = load_run_objective(run_dir).eval()
    spec = load_task_registry(study.registry)[task]
    cuts = list(load_task_split(spec, "test", study.registry.parent))
    frames = EmbeddingCache(study.out / ".embeddings", progress=False).get(objective.encoder, cuts, name=f"{task}/test")
    texts, _ = caption_index(cuts, frames)
    return {"clip_ids": list(frames.ids), "audio": embed_audio(objective, frames), "captions": texts,
            "text": embed_texts(objective, texts, progress=False)}


def _audio_widget(path: str | None):
    import ipywidgets as w

    if not path or not Path(path).exists():
        return w.HTML(f"<i>audio not found: {path}</i>")
    return w.Audio.from_file(path, autoplay=False, loop=False)


def tsne_explorer(study, record_name: str = "clips_by_domain"):
    """The t-SNE map of a ``tsne`` record (written by 05_caption_tsne); click a point to hear the clip and read its
    captions (caption maps show the caption and play its clip)."""
    import ipywidgets as w
    import matplotlib.pyplot as plt

    from audiolp.files import read_json
    from audiolp.files import record_path

    rec = read_json(record_path(study.records / "tsne", "tsne", record_name), "run 05_caption_tsne first")
    pts = rec["metrics"]["points"]
    index = ClipIndex.from_registry(study.registry)
    out = w.Output()
    fig, ax = plt.subplots(figsize=(6.5, 5))
    labels = pts["label"]
    for i, lab in enumerate(sorted(set(labels))):
        idx = [j for j, v in enumerate(labels) if v == lab]
        ax.scatter([pts["x"][j] for j in idx], [pts["y"][j] for j in idx], s=6, label=lab, color=plt.cm.tab20(i % 20))
    ax.legend(fontsize=6)
    ax.set_title(f"{record_name}: click a point")

    def on_click(event):
        if event.xdata is None:
            return
        j = nearest_point(event.xdata, event.ydata, pts["x"], pts["y"])
        cut_id = str(pts["id"][j]).split("#")[0]
        path, caps = index.clip(cut_id)
        with out:
            out.clear_output()
            print(f"{cut_id} ({labels[j]})")
            for c in caps[:5]:
                print(" -", c)
            from IPython.display import display

            display(_audio_widget(path))

    fig.canvas.mpl_connect("button_press_event", on_click)
    return w.VBox([fig.canvas if isinstance(fig.canvas, w.DOMWidget) else w.HTML(
        "<i>run %matplotlib widget for clicks (ipympl)</i>"), out])


def retrieval_explorer(study, encoder: str, task: str = "retrieval", k: int = 5):
    """Pick a caption (-> the k nearest test clips, playable) or a clip (-> the k nearest captions), by the cosine
    similarity of the encoder's contrastive embeddings (its own heads, or a LiT alignment; see
    ``audiolp.eval.retrieval``)."""
    import ipywidgets as w
    from IPython.display import display

    data = embed_task(study, encoder, task)
    index = ClipIndex.from_registry(study.registry)
    captions, clip_ids = data["captions"], data["clip_ids"]
    pick_caption = w.Dropdown(options=[(c[:90], i) for i, c in enumerate(captions)], description="caption")
    pick_clip = w.Dropdown(options=[(cid, i) for i, cid in enumerate(clip_ids)], description="clip")
    out = w.Output()

    def show_caption(change):
        with out:
            out.clear_output()
            print("query:", captions[change["new"]])
            for i, s in nearest(data["text"][change["new"]], data["audio"], k):
                print(f"{s:.3f} {clip_ids[i]}")
                display(_audio_widget(index.clip(clip_ids[i])[0]))

    def show_clip(change):
        with out:
            out.clear_output()
            cid = clip_ids[change["new"]]
            print("query clip:", cid)
            display(_audio_widget(index.clip(cid)[0]))
            for i, s in nearest(data["audio"][change["new"]], data["text"], k):
                print(f"{s:.3f} {captions[i]}")

    pick_caption.observe(show_caption, names="value")
    pick_clip.observe(show_clip, names="value")
    return w.VBox([pick_caption, pick_clip, out])
