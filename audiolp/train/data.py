"""What a run trains on: the manifest, less the clips that would stop the run, cut to the scale subset; and the
objective's config completed from the corpus (e.g. tagging's label set)."""
from __future__ import annotations

from audiolp.train.config import TrainConfig


def min_clip_seconds(cfg: TrainConfig) -> float:
    """The shortest clip the run accepts: ``loader.min_clip_seconds``, and never less than the encoder's minimum
    (lhotse gives a clip round(duration / hop) fbank frames, so one of MIN_INPUT_FRAMES hops always has enough)."""
    from audiolp.models.zipformer import Zipformer

    encoder_min = Zipformer.MIN_INPUT_FRAMES * cfg.loader.feature_config.frame_shift_s
    return max(encoder_min, cfg.loader.min_clip_seconds or 0.0)


def screen_training_cuts(cuts, needs_captions: bool, min_seconds: float, max_seconds: float | None = None,
                         log=print):
    """Clips a run cannot or should not use are left out before it starts: shorter than ``min_seconds``, longer
    than ``max_seconds`` (when given), or without a non-empty caption when the objective needs one. One pass over
    the manifest (lazy ones stay lazy). Returns (the ids to leave out, {reason: count}); each reason is logged with
    examples (id, file)."""
    from audiolp.data.schema import clean_captions

    bad: dict[str, list] = {"too_short": [], "too_long": [], "no_caption": []}
    for c in cuts:
        if c.duration < min_seconds:
            bad["too_short"].append(c)
        elif max_seconds is not None and c.duration > max_seconds:
            bad["too_long"].append(c)
        elif needs_captions and not clean_captions((c.supervisions[0].custom or {}).get("caption")
                                                   if c.supervisions else None):
            bad["no_caption"].append(c)
    counts = {k: len(v) for k, v in bad.items()}
    if not any(counts.values()):
        return set(), counts

    def where(c) -> str:
        src = c.recording.sources[0].source if getattr(c, "has_recording", False) and c.recording.sources else "?"
        return f"{c.id} ({src})"

    why = {"too_short": f"shorter than {min_seconds:.3f} s (loader.min_clip_seconds, or the encoder's minimum)",
           "too_long": f"longer than {max_seconds} s (loader.max_clip_seconds)",
           "no_caption": "without a caption in supervision.custom['caption']"}
    for reason, items in bad.items():
        if items:
            log(f"[audiolp] leaving out {len(items)} clip(s) {why[reason]}: "
                + ", ".join(where(c) for c in items[:3]) + (", ..." if len(items) > 3 else ""))
    return {c.id for items in bad.values() for c in items}, counts


class IdFilter:
    """A picklable cut filter (lhotse's lazy filter may travel to DataLoader workers): the cuts whose id is in
    ``ids`` (``keep=True``) or not in it."""

    def __init__(self, ids: set[str], keep: bool):
        self.ids, self.keep = ids, keep

    def __call__(self, cut) -> bool:
        return (cut.id in self.ids) == self.keep


def load_training_cuts(cfg: TrainConfig, log=print):
    """The manifest without the clips a run cannot use (see ``screen_training_cuts``), cut down to ``cfg.scale``
    (nested subsets counted in ``cfg.scale_unit``; small corpora map the paper's scale to the same fraction of
    PAPER_FULL_PAIRS). Returns (all cuts' metadata, training cuts, scale info or None, {reason: clips left out})."""
    from audiolp.data.schema import load_manifest, shar_metadata
    from audiolp.objectives import objective_class

    if not cfg.data:
        raise ValueError("TrainConfig.data is empty; give the path of a cut manifest (cuts.jsonl.gz) or Shar dir")
    cuts = load_manifest(cfg.data)
    # The scans below (screen, scale, the tagging label set) read metadata only: for a Shar corpus, its cut
    # shards without the audio tars; training then reads the audio of the chosen clips.
    meta = shar_metadata(cfg.data) or cuts
    needs_captions = objective_class(cfg.objective).requires_captions
    left_ids, left_out = screen_training_cuts(meta, needs_captions, min_clip_seconds(cfg),
                                              cfg.loader.max_clip_seconds, log=log)
    usable = meta.filter(IdFilter(left_ids, keep=False)) if left_ids else meta
    if cfg.scale is None:
        return meta, (cuts.filter(IdFilter(left_ids, keep=False)) if left_ids else cuts), None, left_out
    from audiolp.data.scale import PAPER_FULL_PAIRS, select_scale

    subset, info = select_scale(usable, cfg.scale, seed=cfg.seed, reference_total=PAPER_FULL_PAIRS,
                                unit=cfg.scale_unit)
    log(f"[audiolp] scale {cfg.scale!r}: {info.describe()}")
    if meta is not cuts:  # Shar: the chosen clips, read with their audio, in manifest order
        subset = cuts.filter(IdFilter({c.id for c in subset}, keep=True))
    return meta, subset, info, left_out


def objective_config_for(cfg: TrainConfig, cuts=None) -> dict:
    """cfg.objective_config, with the run-wide seed and text model filled in where the objective has such fields,
    completed from the corpus ``cuts`` by the objective's ``prepare`` hook (when given)."""
    import dataclasses

    from audiolp.objectives import objective_class

    cls = objective_class(cfg.objective)
    fields = {f.name for f in dataclasses.fields(cls.config_class)}
    out = dict(cfg.objective_config)
    if "seed" in fields and "seed" not in out:
        out["seed"] = cfg.seed
    if cfg.text_model is not None:
        for name in ("text_model", "tokenizer"):
            if name in fields:
                if name in out and out[name] != cfg.text_model:
                    raise ValueError(f"TrainConfig.text_model={cfg.text_model!r} but objective_config.{name}="
                                     f"{out[name]!r}; give the text model in one place")
                out[name] = cfg.text_model
    return out if cuts is None else cls.prepare(out, cuts, cfg.loader.label_field)
