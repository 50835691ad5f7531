"""VocalSound (Gong et al. 2022): ``audio_16k/<speaker>_<n>_<label>.wav`` (e.g. ``f0003_0_cough.wav``) with labels
laughter, sigh, cough, throatclearing, sneeze, sniff, and the released split files ``datafiles/{tr,val,te}.json``
({"data": [{"wav": ".../audio_16k/f0003_0_cough.wav", "labels": ...}]}).

Protocol: with the ``datafiles/`` json files, their speaker-independent split (file base names; clips they do
not list are excluded and counted). Without them, a deterministic speaker-disjoint split: each speaker goes to
test when the sha1 of its id falls in the first 10%, to val in the next 10%, else to train. The label always
comes from the file name. One multiclass task ``vocalsound``.
"""
from __future__ import annotations

import json
from pathlib import Path

from audiolp.data.downstream.common import DownstreamLoad, TaskDef, add_labelled, by_split, hash_split, scan_audio
from audiolp.data.sources.common import SourceLoad, no_expected_files, require_root

NAME = "vocalsound"
DOMAIN = "speech"
LABELS = ("laughter", "sigh", "cough", "throatclearing", "sneeze", "sniff")
DATAFILES = {"train": "tr.json", "val": "val.json", "test": "te.json"}
LAYOUT = "ROOT/audio_16k/f0003_0_cough.wav (and optionally ROOT/datafiles/{tr,val,te}.json)"


def load(root) -> DownstreamLoad:
    root = require_root(root, NAME, ["audio_16k/"])
    audio_dir = root / "audio_16k"
    files = scan_audio(audio_dir) if audio_dir.is_dir() else []
    if not files:
        raise no_expected_files(root, NAME, ["audio_16k/f0003_0_cough.wav"])
    out = SourceLoad(name=NAME)
    out.look_in([audio_dir])
    released = None
    if all((root / "datafiles" / fn).is_file() for fn in DATAFILES.values()):
        released = {}
        for split, fn in DATAFILES.items():
            p = root / "datafiles" / fn
            try:
                data = json.loads(p.read_text(encoding="utf-8"))["data"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(f"{p}: expected {{\"data\": [{{\"wav\": ...}}]}} ({e}); re-extract the release") from e
            for item in data:
                released[Path(str(item.get("wav", ""))).stem] = split
    for path in files:
        parts = path.stem.split("_")
        if len(parts) < 3 or parts[-1] not in LABELS:
            out.bad(str(path), f"name is not <speaker>_<n>_<{'|'.join(LABELS)}>")
            continue
        speaker = parts[0]
        split = released.get(path.stem) if released is not None else hash_split(f"{NAME}:{speaker}")
        if split is None:
            out.rows += 1
            out.excluded += 1
            continue
        add_labelled(out, where=str(path), cut_id=f"{NAME}/{path.stem}", audio_path=path, labels=[parts[-1]],
                     source=NAME, domain=DOMAIN, media_id=f"{NAME}:{path.stem}", split=split, extra={"speaker": speaker})
    rule = "released datafiles split" if released is not None else "speaker-disjoint 80/10/10 split by sha1 of the speaker id"
    task = TaskDef(NAME, "multiclass", "accuracy", list(LABELS), DOMAIN, f"VocalSound non-speech vocalisations (6 classes); {rule}.", by_split)
    return DownstreamLoad(NAME, out, [task], LAYOUT)
