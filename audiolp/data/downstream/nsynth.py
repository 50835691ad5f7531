"""NSynth (Engel et al. 2017): ``nsynth-{train,valid,test}/examples.json`` ({note_str: {instrument_family,
instrument_family_str, ...}}) and the 4 s 16 kHz notes in ``nsynth-<split>/audio/<note_str>.wav``.

Protocol: the official split (train / valid -> val / test). One multiclass task ``nsynth_instrument`` over the
instrument families (bass, brass, ..., vocal), ordered by ``instrument_family`` index. The official test set
has no synth_lead; the label set is the union over the splits.
"""
from __future__ import annotations

import json

from audiolp.data.downstream.common import DownstreamLoad, TaskDef, add_labelled, by_split
from audiolp.data.sources.common import SourceLoad, no_expected_files, require_root, resolve_audio

NAME = "nsynth"
DOMAIN = "music"
PARTS = {"train": "train", "valid": "val", "test": "test"}
LAYOUT = "ROOT/nsynth-train/examples.json and ROOT/nsynth-train/audio/bass_synthetic_033-022-050.wav (also valid, test)"


def load(root) -> DownstreamLoad:
    root = require_root(root, NAME, [f"nsynth-{p}/examples.json" for p in PARTS])
    present = [p for p in PARTS if (root / f"nsynth-{p}" / "examples.json").is_file()]
    if not present:
        raise no_expected_files(root, NAME, [f"nsynth-{p}/examples.json" for p in PARTS])
    out = SourceLoad(name=NAME)
    families: dict[str, int] = {}
    for part in present:
        folder = root / f"nsynth-{part}"
        meta_path = folder / "examples.json"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{meta_path}: not valid JSON ({e}); re-extract nsynth-{part}.jsonwav.tar.gz") from e
        out.look_in([folder / "audio"])
        for note, info in sorted(meta.items()):
            where = f"{meta_path}:{note}"
            fam = info.get("instrument_family_str") if isinstance(info, dict) else None
            if not fam:
                out.bad(where, "no 'instrument_family_str'")
                continue
            families.setdefault(fam, int(info.get("instrument_family", 10 ** 6)))
            path = folder / "audio" / f"{note}.wav"
            add_labelled(out, where=where, cut_id=f"{NAME}/{note}", audio_path=resolve_audio(path), expected=path,
                         labels=[fam], source=NAME, domain=DOMAIN, media_id=f"{NAME}:{note}", split=PARTS[part])
    labels = sorted(families, key=lambda f: (families[f], f))
    task = TaskDef("nsynth_instrument", "multiclass", "accuracy", labels, DOMAIN,
                   f"NSynth instrument family ({len(labels)} classes); official train / valid / test split.", by_split)
    return DownstreamLoad(NAME, out, [task], LAYOUT)
