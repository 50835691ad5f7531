"""Every study notebook executes with papermill on the tiny MiniStew with small parameters; its records hold finite
numbers and its figures exist (PNG and PDF); `make figures` redraws them from the records alone, identically; a bad
parameter fails in the first cell after the parameters with its message. A pipeline check: the numbers mean nothing."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from audiolp.study.demo import NOTEBOOKS

REPO = Path(__file__).resolve().parents[1]
QUICK_PROBE = {"seeds": [0], "learning_rates": [1e-2], "weight_decays": [1e-4], "epochs": 2, "min_steps": 8,
               "n_boot": 100}


def _params(corpus: Path, out: Path) -> dict:
    return {"corpus": str(corpus), "steps": 3, "tasks": "drum_instrument,pitch_level,event_detection",
            "probe": json.dumps(QUICK_PROBE), "out": str(out / "runs"), "figures": str(out / "figures"),
            "device": "cpu"}


# Small on purpose: 9 runs in all (03 adds 1M to 01's full-scale runs; 04 reuses contrastive@1M and @full).
EXTRA = {"03_scaling": {"scales": "1M,full"},
         "04_init_ablation": {"scales": "400K,1M,full", "objectives": "contrastive"},
         "05_caption_tsne": {"max_points": 120},
         # QA costs an LLM per encoder: one run and its random init (the captioning run's own decoder is tested in
         # test_eval_captioning)
         "06_language_tasks": {"objectives": "contrastive", "lit_steps": 2, "decoder_steps": 2, "qa_steps": 2,
                               "qa_questions_per_type": 1}}


def _execute(name: str, params: dict, out: Path, cwd: Path):
    import papermill

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return papermill.execute_notebook(str(REPO / "notebooks" / f"{name}.ipynb"), str(out / f"{name}.ipynb"),
                                      parameters=params, kernel_name="python3", progress_bar=False, cwd=str(cwd))


@pytest.fixture(scope="module")
def executed(tiny_ministew, tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    cwd = tmp_path_factory.mktemp("elsewhere")  # not notebooks/: outputs must not depend on the working directory
    for name in NOTEBOOKS:
        _execute(name, {**_params(tiny_ministew, out), **EXTRA.get(name, {})}, out, cwd)
    return out


def _finite(x) -> bool:
    if isinstance(x, dict):
        return all(_finite(v) for v in x.values())
    if isinstance(x, (list, tuple)):
        return all(_finite(v) for v in x)
    return not isinstance(x, float) or math.isfinite(x)


def test_every_notebook_leaves_records_and_figures(executed):
    from audiolp.study.records import read_records

    records = read_records(executed / "runs" / "records")
    kinds = {r["kind"] for r in records}
    assert {"pretrain", "probe", "tsne", "retrieval", "captioning", "qa"} <= kinds
    probes = [r for r in records if r["kind"] == "probe"]
    encoders = {r["params"]["encoder"] for r in probes}
    # 01/02 at full, 03 at three scales, 04 tagging-initialised runs, and both references
    assert {"contrastive@full", "captioning@full", "contrastive@1M", "captioning@1M", "tagging@full",
            "contrastive@400K", "contrastive+tagging@400K", "contrastive+tagging@full", "random_init",
            "fbank"} <= encoders
    assert {r["params"]["pooling"] for r in probes} == {"mean", "attention", "frames"}
    for r in records:
        assert _finite(r["metrics"]), r["_path"]
    for r in probes:
        m = r["metrics"]
        assert 0.0 <= m["test"] <= 1.0 and m["interval"][0] <= m["test"] <= m["interval"][1]
    figs = executed / "figures"
    for stem in ("01_objective_gap_full", "02_pooling_gap_full", "02_attention_probe_full", "03_scaling",
                 "04_init_ablation_contrastive", "05_tsne_captions_by_source",
                 "05_tsne_clips_by_domain", "06_language_tasks"):
        for ext in (".png", ".pdf"):
            assert (figs / f"{stem}{ext}").stat().st_size > 1000, stem
    for name in NOTEBOOKS:
        assert (executed / f"{name}.ipynb").exists()


def test_runs_are_reused_across_notebooks(executed):
    """02 reused 01's runs, 03 the full-scale runs, 04 the scratch runs of 01 and 03: one run dir per config."""
    run_dirs = [p.name for p in (executed / "runs" / "runs").iterdir()]
    names = [d.rsplit("-", 1)[0] for d in run_dirs]
    assert len(names) == len(set(names)), run_dirs
    # 2 objectives x {full, 1M} + contrastive@400K + tagging@full + contrastive from tagging at 3 scales
    assert len(run_dirs) == 4 + 1 + 1 + 3


def test_figures_rebuild_from_records_alone_identically(executed, tmp_path):
    """`make figures` replays every figure the notebooks drew (their `figure` records) on the stored records: a
    figure whose records did not change since is byte-identical; 03's curves gained 04's 400K point."""
    from audiolp.study.figures import rebuild_figures
    from audiolp.study.summary import write_summary

    paths = rebuild_figures(executed / "runs" / "records", tmp_path)
    drawn = {p.name for p in (executed / "figures").iterdir()}
    assert {p.name for p in paths} - {"pretrain_losses.png"} == drawn
    for stem in ("01_objective_gap_full", "02_pooling_gap_full", "05_tsne_captions_by_source", "06_language_tasks"):
        assert (tmp_path / f"{stem}.png").read_bytes() == (executed / "figures" / f"{stem}.png").read_bytes(), stem
    assert (tmp_path / "03_scaling.png").read_bytes() != (executed / "figures" / "03_scaling.png").read_bytes()
    again = rebuild_figures(executed / "runs" / "records", tmp_path / "again")
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(paths, again) if a.suffix == ".png")
    summary = write_summary(executed / "runs").read_text()
    assert "| 1 | contrastive is more data-efficient" in summary and "| contrastive@full |" in summary


def test_a_bad_parameter_fails_in_the_first_cell_with_its_message(tiny_ministew, tmp_path):
    import papermill

    with pytest.raises(papermill.PapermillExecutionError) as e:
        _execute("03_scaling", {**_params(tiny_ministew, tmp_path), "scale": "5X"}, tmp_path, tmp_path)
    assert "scale='5X' is not a scale" in str(e.value)
    nb = json.loads((tmp_path / "03_scaling.ipynb").read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    failed = [i for i, c in enumerate(code) if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    # code cells: parameters, the injected parameters, the setup (which checks every parameter first)
    assert failed and failed[0] == 2
    assert not (tmp_path / "runs" / "runs").exists()  # nothing trained


def test_widgets_build_on_the_study_outputs(executed, tiny_ministew):
    """The JupyterLab explorers assemble from the records and runs (display needs a browser; the data does not)."""
    import ipywidgets as w
    import numpy as np

    from audiolp.study.experiments import Study
    from audiolp.study.widgets import ClipIndex, embed_task, nearest, nearest_point, retrieval_explorer, tsne_explorer

    assert nearest(np.array([1.0, 0.0]), np.array([[0.0, 1.0], [2.0, 0.1], [1.0, 1.0]]), k=2)[0][0] == 1
    assert nearest_point(0.9, 1.1, [0, 1, 5], [0, 1, 5]) == 1
    p = _params(tiny_ministew, executed)
    study = Study.from_parameters(corpus=p["corpus"], steps=p["steps"], tasks=p["tasks"], probe=p["probe"],
                                  out=p["out"], figures=p["figures"], device="cpu")
    index = ClipIndex.from_registry(study.registry)
    data = embed_task(study, "contrastive@full")
    assert data["audio"].shape[0] == len(data["clip_ids"]) and data["text"].shape[0] == len(data["captions"])
    assert all(Path(index.clip(c)[0]).exists() for c in data["clip_ids"])
    assert isinstance(retrieval_explorer(study, "contrastive@full"), w.VBox)
    assert isinstance(tsne_explorer(study), w.VBox)
    with pytest.raises(ValueError, match="contrastive run"):
        embed_task(study, "captioning@full")


def test_caption_tsne_reads_its_records_back(executed, tiny_ministew, monkeypatch):
    """05 again with the same parameters: both maps come from their records (no t-SNE is fitted), identical."""
    import audiolp.eval.tsne as tsne_mod
    from audiolp.study.experiments import Study, caption_tsne
    from audiolp.study.records import read_records

    p = _params(tiny_ministew, executed)
    study = Study.from_parameters(corpus=p["corpus"], steps=p["steps"], tasks=p["tasks"], probe=p["probe"],
                                  out=p["out"], figures=p["figures"], device="cpu")
    before = {r["name"]: r for r in read_records(study.records / "tsne")}
    monkeypatch.setattr(tsne_mod, "tsne_map", lambda *a, **k: pytest.fail("a t-SNE was recomputed"))
    max_points = EXTRA["05_caption_tsne"]["max_points"]
    again = caption_tsne(study, max_points=max_points)
    assert [r["name"] for r in again] == ["captions_by_source", "clips_by_domain"]
    assert all(r["metrics"] == before[r["name"]]["metrics"] for r in again)
    with pytest.raises(pytest.fail.Exception, match="recomputed"):
        caption_tsne(study, max_points=max_points + 1)  # other params: computed anew


def test_every_parameter_is_visible_to_papermill():
    """papermill reads the parameters cell (for --help-notebook and its unknown-parameter warning): a comment it
    cannot parse hides the parameter."""
    import papermill

    for name in NOTEBOOKS:
        nb = json.loads((REPO / "notebooks" / f"{name}.ipynb").read_text())
        cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
        declared = {line.split("=")[0].strip() for line in "".join(cell["source"]).splitlines() if " = " in line}
        assert set(papermill.inspect_notebook(str(REPO / "notebooks" / f"{name}.ipynb"))) == declared, name
