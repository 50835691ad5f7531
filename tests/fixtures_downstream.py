"""Tiny copies of the downstream datasets in their published layouts (file names, csv headers, folders), with
short synthetic tones at each dataset's native sample rate. Every metadata-driven dataset also has one row whose
audio is absent. ``EXPECTED`` (per task: clips per split) is what the adapters must produce."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import soundfile as sf


def tone(path: Path, sr: int, seconds: float = 0.25, freq: float = 440.0, channels: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(round(seconds * sr))) / sr
    x = (0.1 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    sf.write(path, np.stack([x] * channels, 1) if channels > 1 else x, sr)
    return path


def write_csv(path: Path, header: list[str] | None, rows: list[list], delimiter: str = ",", quote_all=False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter=delimiter, quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL)
        if header:
            w.writerow(header)
        w.writerows(rows)
    return path


def make_esc50(root: Path) -> Path:
    rows = []
    for fold in range(1, 6):
        for target, cat in ((0, "dog"), (10, "rain")):
            fn = f"{fold}-{100030 + fold}-A-{target}.wav"
            rows.append([fn, fold, target, cat, "True" if target == 0 else "False", 100030 + fold, "A"])
            tone(root / "audio" / fn, 44_100, freq=300 + target * 20)
    rows.append(["3-999999-A-0.wav", 3, 0, "dog", "True", 999999, "A"])  # no audio
    write_csv(root / "meta" / "esc50.csv", ["filename", "fold", "target", "category", "esc10", "src_file", "take"], rows)
    return root


def make_urbansound8k(root: Path) -> Path:
    rows = []
    for fold in range(1, 11):
        cid, cls = (3, "dog_bark") if fold % 2 else (0, "air_conditioner")
        fn = f"{100000 + fold}-{cid}-0-0.wav"
        rows.append([fn, 100000 + fold, 0.0, 0.25, 1, fold, cid, cls])
        tone(root / "audio" / f"fold{fold}" / fn, 48_000 if fold % 2 else 22_050, channels=2 if fold == 1 else 1)
    rows.append(["200000-3-0-0.wav", 200000, 0.0, 4.0, 1, 2, 3, "dog_bark"])  # no audio
    write_csv(root / "metadata" / "UrbanSound8K.csv",
              ["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"], rows)
    return root


def make_fsd50k(root: Path) -> Path:
    gt = root / "FSD50K.ground_truth"
    write_csv(gt / "vocabulary.csv", None, [[0, "Bark", "/m/05tny_"], [1, "Music", "/m/04rlf"], [2, "Speech", "/m/09x0r"]])
    dev = [["64760", "Bark", "/m/05tny_", "train"], ["16399", "Music", "/m/04rlf", "train"],
           ["16401", "Bark,Music", "/m/05tny_,/m/04rlf", "train"], ["16402", "Speech", "/m/09x0r", "train"],
           ["16403", "Speech,Music", "/m/09x0r,/m/04rlf", "val"], ["16404", "Bark", "/m/05tny_", "val"],
           ["99999", "Bark", "/m/05tny_", "train"]]  # last: no audio
    write_csv(gt / "dev.csv", ["fname", "labels", "mids", "split"], dev)
    ev = [["37199", "Music,Speech,Bark", "/m/04rlf,/m/09x0r,/m/05tny_"], ["175151", "Speech", "/m/09x0r"]]
    write_csv(gt / "eval.csv", ["fname", "labels", "mids"], ev)
    for r in dev[:-1]:
        tone(root / "FSD50K.dev_audio" / f"{r[0]}.wav", 44_100)
    for r in ev:
        tone(root / "FSD50K.eval_audio" / f"{r[0]}.wav", 44_100)
    return root


def make_voxceleb1(root: Path) -> Path:
    lines = []
    for s, spk in enumerate(("id10001", "id10002", "id10003")):
        base = root / ("vox1_test_wav/wav" if spk == "id10003" else "wav")
        for k, code in enumerate((1, 1, 2, 3)):
            rel = f"{spk}/1zcIwhmdeo{s}/{k + 1:05d}.wav"
            lines.append(f"{code} {rel}")
            tone(base / rel, 16_000)
    lines.append("1 id10001/missingVideo/00001.wav")  # no audio
    (root / "iden_split.txt").write_text("\n".join(lines) + "\n")
    return root


CREMAD_FILES = ("1001_DFA_ANG_XX", "1001_IEO_HAP_HI", "1002_DFA_SAD_XX", "1074_DFA_NEU_XX", "1085_DFA_FEA_XX",
                "1085_TIE_DIS_XX")


def make_cremad(root: Path) -> Path:
    for name in CREMAD_FILES:
        tone(root / "AudioWAV" / f"{name}.wav", 16_000)
    return root


def make_magnatagatune(root: Path) -> Path:
    tags = ["guitar", "classical", "slow", "techno", "rare"]
    rows = [(2, "0/artist_a-album-01-song-0-29.mp3", ["guitar", "classical"]),
            (6, "5/artist_b-album-02-song-30-59.mp3", ["guitar", "slow"]),
            (10, "b/artist_c-album-03-song-0-29.mp3", ["techno"]),
            (14, "c/artist_d-album-04-song-0-29.mp3", ["guitar", "classical"]),
            (18, "d/artist_e-album-05-song-0-29.mp3", ["guitar", "slow"]),
            (22, "f/artist_f-album-06-song-0-29.mp3", ["classical"]),
            (26, "e/artist_g-album-07-song-0-29.mp3", ["guitar"])]  # last: no audio
    out = [[cid] + ["1" if t in on else "0" for t in tags] + [mp3] for cid, mp3, on in rows]
    write_csv(root / "annotations_final.csv", ["clip_id"] + tags + ["mp3_path"], out, delimiter="\t", quote_all=True)
    for _, mp3, _ in rows[:-1]:
        tone(root / mp3, 16_000, seconds=0.5)
    return root


def make_nsynth(root: Path) -> Path:
    parts = {"train": [("bass_synthetic_033-022-050", "bass", 0), ("guitar_acoustic_010-060-100", "guitar", 3),
                       ("guitar_electronic_022-062-127", "guitar", 3)],
             "valid": [("bass_electronic_018-040-050", "bass", 0)],
             "test": [("guitar_acoustic_015-070-075", "guitar", 3), ("bass_synthetic_068-049-025", "bass", 0),
                      ("bass_synthetic_999-049-025", "bass", 0)]}  # last: no audio
    for part, notes in parts.items():
        meta = {n: {"note_str": n, "instrument_family": i, "instrument_family_str": fam, "sample_rate": 16000}
                for n, fam, i in notes}
        (root / f"nsynth-{part}").mkdir(parents=True, exist_ok=True)
        (root / f"nsynth-{part}" / "examples.json").write_text(json.dumps(meta))
        for n, _, _ in notes[:-1] if part == "test" else notes:
            tone(root / f"nsynth-{part}" / "audio" / f"{n}.wav", 16_000)
    return root


def make_gtzan(root: Path) -> Path:
    for genre in ("blues", "rock"):
        for k in range(10):
            tone(root / "genres" / genre / f"{genre}.{k:05d}.wav", 22_050, seconds=0.2)
    return root


def make_vocalsound(root: Path, datafiles: bool = True) -> Path:
    names = ["f0003_0_cough", "f0003_1_laughter", "m0061_0_sneeze", "m0061_1_sniff", "f0100_0_sigh",
             "m0200_0_throatclearing"]
    for n in names:
        tone(root / "audio_16k" / f"{n}.wav", 16_000)
    if datafiles:
        # f0003 train, m0061 test, f0100 val; m0200 is listed nowhere: excluded
        split = {"tr.json": names[:2], "val.json": names[4:5], "te.json": names[2:4]}
        for fn, ns in split.items():
            (root / "datafiles").mkdir(parents=True, exist_ok=True)
            (root / "datafiles" / fn).write_text(json.dumps(
                {"data": [{"wav": f"/data/vocalsound/audio_16k/{n}.wav", "labels": "/m/01b_21"} for n in ns]}))
    return root


def make_libricount(root: Path) -> Path:
    for count in range(3):
        for k in range(4):
            tone(root / "test" / f"{count}_{k:02d}a5d2c6f-{count}.wav", 16_000, seconds=0.2)
            (root / "test" / f"{count}_{k:02d}a5d2c6f-{count}.json").write_text("[]")
    return root


def make_audioset_strong(root: Path) -> Path:
    header = ["segment_id", "start_time_seconds", "end_time_seconds", "label"]
    train = [["abcdefghijk_30000", 0.0, 1.5, "/m/05tny_"], ["abcdefghijk_30000", 2.0, 4.0, "/m/09x0r"],
             ["lmnopqrstuv_0", 0.5, 9.0, "/m/09x0r"], ["-wxyzABCDEF_10000", 1.0, 2.0, "/m/05tny_"],
             ["missingaudo_20000", 0.0, 1.0, "/m/05tny_"]]
    ev = [["GHIJKLMNOPQ_40000", 3.0, 3.5, "/m/05tny_"], ["GHIJKLMNOPQ_40000", 0.0, 10.0, "/m/09x0r"],
          ["RSTUVWXYZ01_0", 0.2, 0.7, "/m/05tny_"]]
    write_csv(root / "audioset_train_strong.tsv", header, train, delimiter="\t")
    write_csv(root / "audioset_eval_strong.tsv", header, ev, delimiter="\t")
    write_csv(root / "mid_to_display_name.tsv", None, [["/m/05tny_", "Bark"], ["/m/09x0r", "Speech"]], delimiter="\t")
    tone(root / "audio" / "train" / "abcdefghijk_30000.wav", 32_000, seconds=1.0)
    tone(root / "audio" / "train" / "Ylmnopqrstuv_0.wav", 16_000, seconds=1.0)
    tone(root / "audio" / "train" / "Y-wxyzABCDEF_10.000_20.000.flac", 48_000, seconds=1.0)
    tone(root / "audio" / "eval" / "GHIJKLMNOPQ_40000.wav", 16_000, seconds=1.0)
    tone(root / "audio" / "eval" / "RSTUVWXYZ01_0.wav", 16_000, seconds=1.0)
    return root


def make_vggsound(root: Path) -> Path:
    rows = [["---g-f_I2yQ", 1, "people marching", "train"], ["--0PQM4-hqg", 30, "waterfall burbling", "train"],
            ["--56QUhyDQM", 185, "playing tennis", "train"], ["--5OkAjCI7g", 40, "people belly laughing", "train"],
            ["--8puiAGLhs", 30, "car engine starting", "train"], ["--96EN9NUQM", 242, "waterfall burbling", "test"],
            ["--9O4XZOge4", 20, "people marching", "test"], ["--missingXX", 0, "playing tennis", "train"]]
    write_csv(root / "vggsound.csv", None, rows)
    for ytid, start, _, _ in rows[:-1]:
        if ytid == "--5OkAjCI7g":
            tone(root / "audio" / f"Y{ytid}_{start}.000_{start + 10}.000.flac", 44_100)
        else:
            tone(root / "audio" / f"{ytid}_{start:06d}.wav", 16_000)
    return root


def make_audiocaps_retrieval(root: Path) -> Path:
    """AudioCaps as the repository ships its csvs (dataset/{train,val,test}.csv, one row per caption, 5 rows per
    test clip) with the test audio downloaded by YouTube id: a plain ``<ytid>.wav``, AudioSet's
    ``Y<ytid>_<start>.000_<end>.000.flac`` and the whole video ``Y<ytid>.wav`` (cut to the clip); one test clip has
    no audio; the train split's audio is absent (as in most copies)."""
    header = ["audiocap_id", "youtube_id", "start_time", "caption"]
    clips = [("7fmOlUlwoNg", 20, ["a man speaks", "a man talks calmly", "a person speaking", "male speech",
                                  "a man speaks while birds chirp"]),
             ("6BJ455B1aAs", 0, ["a dog barks", "dogs bark loudly", "barking", "a dog barks twice", "a puppy yelps"]),
             ("GOD8Bt5LfDE", 20, ["rain falls", "heavy rain", "rain on a roof", "raindrops patter", "a storm"]),
             ("noaudio0000", 30, ["wind blows", "wind", "a gust of wind", "wind noise", "breeze"])]
    rows, n = [], 100
    for ytid, start, caps in clips:
        for cap in caps:
            rows.append([n, ytid, start, cap])
            n += 1
    write_csv(root / "test.csv", header, rows)
    write_csv(root / "train.csv", header, [[1, "trainonly00", 0, "a cat meows"]])
    tone(root / "audio" / "test" / "7fmOlUlwoNg.wav", 44_100, freq=300)
    tone(root / "audio" / "test" / "Y6BJ455B1aAs_0.000_10.000.flac", 32_000, freq=500)
    tone(root / "audio" / "test" / "YGOD8Bt5LfDE.wav", 16_000, seconds=32.0, freq=700)  # the whole video
    return root


def make_clotho_retrieval(root: Path) -> Path:
    """Clotho v2.1 as its Zenodo archives unpack: clotho_captions_evaluation.csv and evaluation/*.wav (44.1 kHz, names
    with spaces and commas), plus the development csv without its audio; one evaluation row has no audio."""
    header = ["file_name"] + [f"caption_{i}" for i in range(1, 6)]
    rows = [["Santa Motor.wav", "a motor hums", "an engine idles", "a machine runs", "a motor whirs", "engine noise"],
            ["birds, morning.wav", "birds sing", "birds chirp at dawn", "many birds", "birdsong", "birds call"],
            ["Footsteps on gravel.wav", "someone walks", "steps on gravel", "footsteps", "a person walks", "walking"],
            ["gone.wav", "a", "b", "c", "d", "e"]]
    write_csv(root / "clotho_captions_evaluation.csv", header, rows)
    write_csv(root / "clotho_captions_development.csv", header, [["dev.wav", "x", "y", "z", "u", "v"]])
    for i, row in enumerate(rows[:-1]):
        tone(root / "evaluation" / row[0], 44_100, freq=250 + 150 * i)
    return root


MAKERS = {"esc50": make_esc50, "urbansound8k": make_urbansound8k, "fsd50k": make_fsd50k, "voxceleb1": make_voxceleb1,
          "cremad": make_cremad, "magnatagatune": make_magnatagatune, "nsynth": make_nsynth, "gtzan": make_gtzan,
          "vocalsound": make_vocalsound, "libricount": make_libricount, "audioset_strong": make_audioset_strong,
          "vggsound": make_vggsound, "audiocaps_retrieval": make_audiocaps_retrieval,
          "clotho_retrieval": make_clotho_retrieval}
