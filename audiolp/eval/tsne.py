"""t-SNE maps of caption and clip embeddings, with silhouette scores so that "clusters by source" is a number.

    res = caption_tsne(cuts)                        # MiniLM mean-pooled captions, coloured by caption source
    res = clip_tsne(cache.get(encoder, cuts), cuts, color_by="domain")   # mean of each clip's frames
    plot_tsne(res, "figures/caption_tsne")          # .png and .pdf
    record = res.to_dict()                          # plain data for a results record

Silhouettes (scikit-learn) are computed twice: on the high-dimensional embeddings with the cosine distance (the
claim itself: do embeddings group by source?) and on the 2-D map (what the figure shows; t-SNE can exaggerate
clusters, so the first number is the one to cite). Both lie in [-1, 1]; ~0 means no grouping.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from audiolp.eval.embed import Embeddings

# Per-caption source fields, tried in order: CaptionStew's caption_sources, else MiniStew's caption_styles (the
# corpus whose style each caption imitates); a clip without either gives all its captions the clip's source.
CAPTION_SOURCE_FIELDS = ("caption_sources", "caption_styles")


@dataclass
class TsneResult:
    kind: str  # "captions" | "clips"
    color_by: str  # the field the labels come from
    coords: np.ndarray  # (n, 2)
    labels: list[str]
    ids: list[str]  # clip id of each point
    silhouette_cosine: float | None  # on the embeddings, cosine distance
    silhouette_2d: float | None  # on the map, euclidean
    n_total: int  # points before subsampling
    settings: dict = field(default_factory=dict)
    texts: list[str] = field(default_factory=list)  # captions (kind "captions")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["coords"] = np.asarray(self.coords).round(4).tolist()
        return d


def subsample(n: int, max_points: int | None, seed: int = 0) -> np.ndarray:
    """Indices of at most ``max_points`` of ``n`` items, the same for the same (n, max_points, seed), in order."""
    if max_points is None or n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def silhouettes(x: np.ndarray, coords: np.ndarray, labels: list[str]) -> tuple[float | None, float | None]:
    """(cosine silhouette of ``x``, euclidean silhouette of ``coords``); None where it is undefined (fewer than 2
    labels, or as many labels as points)."""
    from sklearn.metrics import silhouette_score

    n_labels = len(set(labels))
    if n_labels < 2 or n_labels >= len(labels):
        return None, None
    return (float(silhouette_score(x, labels, metric="cosine")),
            float(silhouette_score(coords, labels, metric="euclidean")))


def tsne_map(x: np.ndarray, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """(n, 2) t-SNE of ``x`` with the cosine distance, PCA initialisation and a fixed seed (same input, same
    map); the perplexity is capped below n, as t-SNE requires."""
    from sklearn.manifold import TSNE

    n = x.shape[0]
    if n < 3:
        raise ValueError(f"t-SNE needs at least 3 points; got {n}")
    perplexity = float(min(perplexity, max(1.0, (n - 1) / 3)))
    return TSNE(n_components=2, perplexity=perplexity, metric="cosine", init="pca", random_state=seed,
                n_jobs=1).fit_transform(np.asarray(x, dtype=np.float32)).astype(np.float32)


def caption_points(cuts, fields=CAPTION_SOURCE_FIELDS) -> tuple[list[str], list[str], list[str], str]:
    """Every caption of ``cuts`` with its source label and clip id; and which field labelled them ("source" when
    no cut has a per-caption field)."""
    texts, labels, ids, used = [], [], [], set()
    for cut in cuts:
        custom = (cut.supervisions[0].custom if cut.supervisions else None) or {}
        caps = custom.get("caption") or []
        caps = [caps] if isinstance(caps, str) else list(caps)
        per_caption = next((f for f in fields if isinstance(custom.get(f), list) and len(custom[f]) == len(caps)),
                           None)
        if per_caption is None and "source" not in custom:
            raise ValueError(f"cut {cut.id}: neither a per-caption source ({list(fields)}) nor custom['source']; "
                             "the map is coloured by caption source")
        used.add(per_caption or "source")
        for k, cap in enumerate(caps):
            texts.append(str(cap))
            labels.append(str(custom[per_caption][k] if per_caption else custom["source"]))
            ids.append(cut.id)
    if not texts:
        raise ValueError("no captions in these cuts (supervision.custom['caption']); give pretraining cuts")
    return texts, labels, ids, "+".join(sorted(used))


def embed_captions(texts: list[str], text_encoder=None, batch_size: int = 64) -> np.ndarray:
    """(n, H) float32 caption embeddings; default: the offline MiniLM, mean-pooled, frozen."""
    import torch

    if text_encoder is None:
        from audiolp.models.text import TextEncoder

        text_encoder = TextEncoder("minilm", max_tokens=128, pooling="mean", trainable=False)
    text_encoder.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            out.append(text_encoder(list(texts[start:start + batch_size])).float().cpu().numpy())
    return np.concatenate(out)


def caption_tsne(cuts, max_points: int = 2000, seed: int = 0, text_encoder=None, perplexity: float = 30.0,
                 fields=CAPTION_SOURCE_FIELDS) -> TsneResult:
    """t-SNE of caption embeddings coloured by caption source (see ``CAPTION_SOURCE_FIELDS``)."""
    texts, labels, ids, used = caption_points(list(cuts), fields)
    n_total = len(texts)
    keep = subsample(n_total, max_points, seed)
    texts, labels, ids = [texts[i] for i in keep], [labels[i] for i in keep], [ids[i] for i in keep]
    x = embed_captions(texts, text_encoder)
    coords = tsne_map(x, seed=seed, perplexity=perplexity)
    s_hd, s_2d = silhouettes(x, coords, labels)
    model = getattr(text_encoder, "model_name", "minilm") if text_encoder is not None else "minilm"
    return TsneResult(kind="captions", color_by=used, coords=coords, labels=labels, ids=ids, texts=texts,
                      silhouette_cosine=s_hd, silhouette_2d=s_2d, n_total=n_total,
                      settings={"seed": seed, "perplexity": perplexity, "max_points": max_points,
                                "text_model": model, "pooling": "mean"})


def clip_tsne(emb: Embeddings, cuts, color_by: str = "domain", max_points: int = 2000, seed: int = 0,
              perplexity: float = 30.0) -> TsneResult:
    """t-SNE of clip embeddings (the mean of each clip's frames) coloured by ``custom[color_by]`` ("domain" or
    "source") of the matching cut."""
    by_id = {c.id: c for c in cuts}
    labels = []
    for cid in emb.ids:
        if cid not in by_id:
            raise ValueError(f"embedded clip {cid} is not among the cuts given; pass the cuts the embeddings came "
                             "from")
        custom = (by_id[cid].supervisions[0].custom if by_id[cid].supervisions else None) or {}
        if color_by not in custom:
            raise ValueError(f"cut {cid}: supervision.custom has no {color_by!r}; colour by 'domain' or 'source'")
        labels.append(str(custom[color_by]))
    keep = subsample(len(emb), max_points, seed)
    x = np.stack([emb.frames_of(int(i)).astype(np.float32).mean(0) for i in keep])
    labels = [labels[i] for i in keep]
    coords = tsne_map(x, seed=seed, perplexity=perplexity)
    s_hd, s_2d = silhouettes(x, coords, labels)
    return TsneResult(kind="clips", color_by=color_by, coords=coords, labels=labels,
                      ids=[emb.ids[i] for i in keep], silhouette_cosine=s_hd, silhouette_2d=s_2d,
                      n_total=len(emb), settings={"seed": seed, "perplexity": perplexity,
                                                  "max_points": max_points, "pooling": "mean of frames"})


def plot_tsne(result: TsneResult, path_stem: str | Path, title: str | None = None) -> list[Path]:
    """Scatter of the map, one colour per label with a legend, silhouettes in the title; writes
    ``<path_stem>.png`` and ``<path_stem>.pdf`` and returns both paths."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    names = sorted(set(result.labels))
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(6.5, 5.0))
    labels = np.asarray(result.labels)
    for k, name in enumerate(names):
        pts = result.coords[labels == name]
        ax.scatter(pts[:, 0], pts[:, 1], s=10, alpha=0.75, color=cmap(k % cmap.N), label=f"{name} ({len(pts)})")

    def fmt(v):
        return "n/a" if v is None else f"{v:.3f}"

    what = "caption embeddings" if result.kind == "captions" else "clip embeddings"
    ax.set_title((title or f"t-SNE of {what} by {result.color_by}")
                 + f"\nsilhouette: cosine {fmt(result.silhouette_cosine)}, 2-D {fmt(result.silhouette_2d)}",
                 fontsize=10)
    ax.set_xlabel("t-SNE 1")
    ax.set_ylabel("t-SNE 2")
    ax.legend(fontsize=7, markerscale=1.5, loc="best", title=result.color_by, title_fontsize=8)
    fig.tight_layout()
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for p in paths:
        fig.savefig(p, dpi=150)
    plt.close(fig)
    return paths
