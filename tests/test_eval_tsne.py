"""t-SNE of captions and clips: labels from the right fields, deterministic subsampling and maps, silhouettes that
separate grouped from mixed points, figures written."""
import numpy as np
import pytest
from lhotse import CutSet

from audiolp.eval.embed import Embeddings
from audiolp.eval.tsne import (caption_points, caption_tsne, clip_tsne, plot_tsne, silhouettes, subsample,
                               tsne_map)


@pytest.fixture(scope="module")
def cuts(tiny_ministew):
    return list(CutSet.from_file(tiny_ministew / "cuts.jsonl.gz"))


def test_subsample_is_deterministic():
    a, b = subsample(100, 10, seed=3), subsample(100, 10, seed=3)
    np.testing.assert_array_equal(a, b)
    assert len(set(a.tolist())) == 10 and list(a) == sorted(a)
    assert not np.array_equal(a, subsample(100, 10, seed=4))
    np.testing.assert_array_equal(subsample(5, 10), np.arange(5))


def test_silhouette_separates_groups_from_noise():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 5
    labels = [str(k) for k in range(3) for _ in range(20)]
    grouped = np.concatenate([c + rng.normal(size=(20, 16)) for c in centres])
    mixed = rng.normal(size=(60, 16))
    s_grouped = silhouettes(grouped, tsne_map(grouped), labels)
    s_mixed = silhouettes(mixed, tsne_map(mixed), labels)
    assert s_grouped[0] > 0.5 and s_grouped[1] > 0.5
    assert abs(s_mixed[0]) < 0.1 and abs(s_mixed[1]) < 0.15
    assert silhouettes(grouped, grouped[:, :2], ["a"] * 60) == (None, None)


def test_caption_points_take_per_caption_sources(cuts):
    texts, labels, ids, used = caption_points(cuts[:3])
    assert used == "caption_styles"  # MiniStew: the caption corpus each caption imitates
    custom = cuts[0].supervisions[0].custom
    assert texts[:len(custom["caption"])] == custom["caption"]
    assert labels[:len(custom["caption"])] == custom["caption_styles"]
    # Without a per-caption field, every caption of a clip gets the clip's source.
    texts, labels, ids, used = caption_points(cuts[:3], fields=())
    assert used == "source" and labels[0] == custom["source"] and ids[0] == cuts[0].id


def test_caption_tsne_on_ministew(cuts, tmp_path):
    res = caption_tsne(cuts, max_points=120, seed=0)
    assert res.coords.shape == (120, 2) and len(res.labels) == len(res.texts) == 120
    assert res.n_total == sum(len(c.supervisions[0].custom["caption"]) for c in cuts)
    assert -1 <= res.silhouette_cosine <= 1 and -1 <= res.silhouette_2d <= 1
    again = caption_tsne(cuts, max_points=120, seed=0)
    np.testing.assert_allclose(again.coords, res.coords, atol=1e-4)
    d = res.to_dict()
    assert d["color_by"] == "caption_styles" and len(d["coords"]) == 120 and isinstance(d["coords"][0][0], float)
    paths = plot_tsne(res, tmp_path / "fig" / "captions")
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size > 1000 for p in paths)


def test_clip_tsne_colours_by_domain(cuts, tmp_path):
    # Stand-in embeddings: frames whose mean is a per-domain direction plus noise, so clips group by domain.
    rng = np.random.default_rng(0)
    dirs = {d: rng.normal(size=8) * 3 for d in ("sound", "music", "speech")}
    frames, offsets = [], [0]
    for c in cuts:
        x = dirs[c.supervisions[0].custom["domain"]] + rng.normal(size=(5, 8))
        frames.append(x.astype(np.float16))
        offsets.append(offsets[-1] + 5)
    emb = Embeddings(ids=[c.id for c in cuts], frames=np.concatenate(frames), offsets=np.array(offsets),
                     labels=[[] for _ in cuts])
    res = clip_tsne(emb, cuts, color_by="domain", max_points=60)
    assert res.coords.shape == (60, 2) and set(res.labels) == {"sound", "music", "speech"}
    assert res.silhouette_cosine > 0.4
    want = {c.id: c.supervisions[0].custom["domain"] for c in cuts}
    assert all(want[i] == lab for i, lab in zip(res.ids, res.labels))
    with pytest.raises(ValueError, match="no 'colour'"):
        clip_tsne(emb, cuts, color_by="colour")
    assert plot_tsne(res, tmp_path / "clips")[0].exists()
