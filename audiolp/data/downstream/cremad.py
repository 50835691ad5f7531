"""CREMA-D (Cao et al. 2014): ``AudioWAV/<actor>_<sentence>_<emotion>_<level>.wav`` (7,442 clips, 16 kHz, 91
actors 1001-1091), the emotion code being the third field: ANG DIS FEA HAP NEU SAD.

Protocol (the dataset ships no split; ours is speaker-disjoint and deterministic, by actor id): actors
1001-1073 train (73 actors), 1074-1082 val (9), 1083-1091 test (9), about 80/10/10 of the clips. The ranges are
parameters of ``load``. One multiclass task ``cremad`` over the six emotions (labels anger, disgust, fear,
happy, neutral, sad).
"""
from __future__ import annotations

from audiolp.data.downstream.common import DownstreamLoad, TaskDef, add_labelled, by_split, scan_audio
from audiolp.data.sources.common import SourceLoad, no_expected_files, require_root

NAME = "cremad"
DOMAIN = "speech"
EMOTIONS = {"ANG": "anger", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
VAL_ACTORS = (1074, 1082)  # inclusive ranges
TEST_ACTORS = (1083, 1091)
LAYOUT = "ROOT/AudioWAV/1001_DFA_ANG_XX.wav"


def load(root, val_actors: tuple[int, int] = VAL_ACTORS, test_actors: tuple[int, int] = TEST_ACTORS) -> DownstreamLoad:
    root = require_root(root, NAME, ["AudioWAV/"])
    audio_dir = root / "AudioWAV"
    files = scan_audio(audio_dir) if audio_dir.is_dir() else []
    if not files:
        raise no_expected_files(root, NAME, ["AudioWAV/1001_DFA_ANG_XX.wav (the 7,442 clips)"])
    out = SourceLoad(name=NAME)
    out.look_in([audio_dir])
    for path in files:
        parts = path.stem.split("_")
        if len(parts) != 4 or not parts[0].isdigit() or parts[2] not in EMOTIONS:
            out.bad(str(path), f"name is not <actor>_<sentence>_<{'|'.join(EMOTIONS)}>_<level>")
            continue
        actor = int(parts[0])
        split = ("test" if test_actors[0] <= actor <= test_actors[1] else
                 "val" if val_actors[0] <= actor <= val_actors[1] else "train")
        add_labelled(out, where=str(path), cut_id=f"{NAME}/{path.stem}", audio_path=path, labels=[EMOTIONS[parts[2]]],
                     source=NAME, domain=DOMAIN, media_id=f"{NAME}:{path.stem}", split=split,
                     extra={"speaker": parts[0]})
    task = TaskDef(NAME, "multiclass", "accuracy", list(EMOTIONS.values()), DOMAIN,
                   f"CREMA-D speech emotion (6 classes); speaker-disjoint split by actor id: val "
                   f"{val_actors[0]}-{val_actors[1]}, test {test_actors[0]}-{test_actors[1]}, train the rest.", by_split)
    return DownstreamLoad(NAME, out, [task], LAYOUT)
