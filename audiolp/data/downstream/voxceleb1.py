"""VoxCeleb1 speaker identification (Nagrani et al. 2017): ``iden_split.txt`` (lines ``1 id10001/1zcIwhmdeo4/00001.wav``;
1 = train, 2 = val, 3 = test) and the 16 kHz utterances under ``wav/`` (also found under ``vox1_dev_wav/wav/`` and
``vox1_test_wav/wav/``, the two archives' folders, or directly under the root).

Protocol: the official identification split (1,251 speakers, 138,361 / 6,904 / 8,251 utterances). One multiclass
task ``voxceleb1_sid``: the label is the speaker id (``id10001``), classes sorted.
"""
from __future__ import annotations

from audiolp.data.downstream.common import DownstreamLoad, TaskDef, add_labelled, by_split
from audiolp.data.sources.common import SourceLoad, no_expected_files, require_root, resolve_audio

NAME = "voxceleb1"
DOMAIN = "speech"
SPLIT_FILE = "iden_split.txt"
SPLIT_CODES = {"1": "train", "2": "val", "3": "test"}
AUDIO_DIRS = ("wav", "vox1_dev_wav/wav", "vox1_test_wav/wav", ".")
LAYOUT = "ROOT/iden_split.txt and ROOT/wav/id10001/1zcIwhmdeo4/00001.wav"


def load(root) -> DownstreamLoad:
    root = require_root(root, NAME, [SPLIT_FILE, "wav/"])
    split_path = root / SPLIT_FILE
    if not split_path.is_file():
        raise no_expected_files(root, NAME, [SPLIT_FILE, "wav/id10001/1zcIwhmdeo4/00001.wav"])
    out = SourceLoad(name=NAME)
    dirs = [root / d for d in AUDIO_DIRS if (root / d).is_dir()]
    out.look_in(dirs)
    speakers = set()
    with open(split_path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            where = f"{split_path}:{i}"
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or parts[0] not in SPLIT_CODES or parts[1].count("/") != 2:
                out.bad(where, f"expected '<1|2|3> id10001/<video>/<utt>.wav', got {line.strip()!r}")
                continue
            rel = parts[1]
            spk = rel.split("/")[0]
            speakers.add(spk)
            path = next((p for p in (resolve_audio(d / rel) for d in dirs) if p is not None), None)
            add_labelled(out, where=where, cut_id=f"{NAME}/{rel.rsplit('.', 1)[0]}", audio_path=path,
                         expected=root / "wav" / rel, labels=[spk], source=NAME, domain=DOMAIN,
                         media_id=f"{NAME}:{rel.rsplit('.', 1)[0]}", split=SPLIT_CODES[parts[0]])
    task = TaskDef("voxceleb1_sid", "multiclass", "accuracy", sorted(speakers), DOMAIN,
                   f"VoxCeleb1 speaker identification, {len(speakers)} speakers; official iden_split.txt "
                   "(1 train / 2 val / 3 test).", by_split)
    return DownstreamLoad(NAME, out, [task], LAYOUT)
