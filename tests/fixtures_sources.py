"""Generate tiny copies of the caption corpora, each in its published file layout, into a folder.

Every corpus gets a few good rows plus, deliberately, one malformed row, one row whose audio file is absent
and one empty caption (WavCaps also gets an unreadable audio file). ``EXPECTED`` holds the exact counts the
adapters must report. Audio is generated (short sine tones); nothing binary is committed.

Cross-corpus links the stew tests rely on:
* YouTube id TTTTTTTTTTT is an AudioCaps *test* clip and also a WavCaps AudioSet_SL clip -> dropped;
* YouTube id TTTTTTTTTTT and WavCaps FreeSound 555 are in WavCaps' own blacklist -> skipped by the WavCaps
  adapter (``excluded``), never applied to other corpora;
* AAAAAAAAAAA (AudioCaps train) is also in WavCaps AudioSet_SL -> merged (duplicate);
* BBBBBBBBBBB (AudioCaps train, 8 kHz, 2 s) is also in AudioSetCaps AudioSet -> merged;
* NNNNNNNNNNN is MusicCaps eval (and an AudioSetCaps YouTube-8M clip), VVVVVVVVVVV is VGGSound test, "eval clip" is Clotho evaluation -> dropped.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16_000

# name -> (cuts, missing_audio, malformed, empty_captions, eval_ids); WavCaps also excludes 2 blacklisted rows
EXPECTED = {
    "audiocaps": dict(cuts=3, missing_audio=1, malformed=1, empty_captions=1, eval_ids=1),
    "clotho": dict(cuts=3, missing_audio=1, malformed=1, empty_captions=1, eval_ids=1),
    "wavcaps": dict(cuts=4, missing_audio=1, malformed=2, empty_captions=1, eval_ids=0),
    "musiccaps": dict(cuts=2, missing_audio=1, malformed=1, empty_captions=1, eval_ids=1),
    "audiosetcaps": dict(cuts=4, missing_audio=1, malformed=1, empty_captions=1, eval_ids=1),
    "paraspeechcaps": dict(cuts=2, missing_audio=1, malformed=1, empty_captions=1, eval_ids=0),
    "jamendomaxcaps": dict(cuts=3, missing_audio=1, malformed=1, empty_captions=1, eval_ids=0),
}

# Options each adapter needs for the fixture (only ParaSpeechCaps: where the original corpora live).
def options(roots: dict[str, Path]) -> dict[str, dict]:
    psc = roots["paraspeechcaps"]
    return {
        "paraspeechcaps": {"audio_root": psc / "corpora", "audio_roots": {"voxceleb": psc / "corpora" / "VoxCeleb"}},
    }


def _tone(path: Path, seconds: float = 1.0, sr: int = SR, freq: float = 440.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(round(seconds * sr))) / sr
    sf.write(path, (0.1 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr)


def _csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def make_audiocaps(root: Path) -> Path:
    header = ["audiocap_id", "youtube_id", "start_time", "caption"]
    _csv(root / "train.csv", header, [
        [1, "AAAAAAAAAAA", 30, "a dog barks"],
        [2, "BBBBBBBBBBB", 0, "rain falls"],
        [3, "CCCCCCCCCCC", 10, ""],  # empty caption
        [4, "DDDDDDDDDDD", 20, "a car passes"],  # no audio file
        [5, "EEEEEEEEEEE", "notanumber", "bad start"],  # malformed start_time
    ])
    _csv(root / "test.csv", header, [
        [10, "TTTTTTTTTTT", 0, "a man speaks"],
        [11, "TTTTTTTTTTT", 0, "a man talks"],
    ])
    _tone(root / "audio" / "AAAAAAAAAAA.wav")
    _tone(root / "audio" / "YBBBBBBBBBBB.flac", seconds=2.0, sr=8000)  # Y-prefixed name, 8 kHz
    _tone(root / "audio" / "test" / "TTTTTTTTTTT.wav")  # per-split subfolder
    return root


def make_clotho(root: Path) -> Path:
    header = ["file_name"] + [f"caption_{i}" for i in range(1, 6)]
    _csv(root / "clotho_captions_development.csv", header, [
        ["birds sing.wav", "Birds sing.", "birds chirp", "birds sing loudly", "small birds sing", "birds chirp outside"],
        ["water, flowing.wav", "water flows", "", "water runs", "a stream flows", "water flows"],
        ["missing.wav", "a", "b", "c", "d", "e"],  # no audio file
        ["silent.wav", "", "", "", "", ""],  # every caption empty
    ])
    with open(root / "clotho_captions_development.csv", "a", encoding="utf-8") as f:
        f.write("short.wav,only,three\n")  # malformed: 3 fields
    _csv(root / "clotho_captions_evaluation.csv", header, [
        ["eval clip.wav", "a crowd cheers", "people cheer", "a crowd claps", "people clap", "cheering"],
    ])
    _tone(root / "development" / "birds sing.wav")
    _tone(root / "development" / "water, flowing.wav")
    _tone(root / "development" / "silent.wav")
    _tone(root / "evaluation" / "eval clip.wav")
    return root


def make_wavcaps(root: Path) -> Path:
    def js(subset: str, fname: str, data: list) -> None:
        p = root / "json_files" / subset / fname
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps({"num_captions_per_audio": 1, "data": data}, indent=1))

    js("BBC_Sound_Effects", "bbc_final.json", [
        {"description": "Door creak", "category": "['Doors']", "caption": "a door creaks", "id": "07066104",
         "duration": 1.0, "audio": "wav_path", "download_link": "x"},
        {"description": "", "category": "", "caption": "  ", "id": "07066105", "duration": 1.0, "audio": "wav_path"},
        {"description": "Thunder", "category": "", "caption": "thunder rumbles", "id": "07066106",
         "duration": 1.0, "audio": "wav_path"},  # corrupt audio file
    ])
    js("SoundBible", "sb_final.json", [
        {"title": "Bell", "description": "", "author": "x", "href": "x", "caption": "a bell rings", "id": "1725",
         "duration": 1.0, "audio": "wav_path", "download_link": "x"},
    ])
    js("FreeSound", "fsd_final.json", [
        {"id": "180913", "file_name": "UK Mello.wav", "href": "x", "tags": ["bird"], "description": "",
         "author": "x", "duration": 1.0, "download_link": "x", "caption": "a bird sings", "audio": "wav_path"},
        {"file_name": "noid.wav", "caption": "no id here", "audio": "wav_path"},  # malformed: no id
        {"id": "999", "caption": "a clock ticks", "audio": "wav_path", "duration": 1.0},  # no audio file
        {"id": "555", "caption": "a clotho test sound", "audio": "wav_path", "duration": 1.0},  # blacklisted
    ])
    blacklist = root / "json_files" / "blacklist" / "blacklist_exclude_test_ac.json"
    blacklist.parent.mkdir(parents=True, exist_ok=True)
    blacklist.write_text(json.dumps({"AudioSet": ["YTTTTTTTTTTT.wav"], "FreeSound": ["555"]}))
    js("AudioSet_SL", "as_final.json", [
        {"id": "YTTTTTTTTTTT.wav", "caption": "a man speaks", "audio": "wav_path", "duration": 10.0},
        {"id": "YAAAAAAAAAAA.wav", "caption": "a dog barks loudly", "audio": "wav_path", "duration": 10.0},
    ])
    _tone(root / "audio" / "BBC_Sound_Effects" / "07066104.flac")
    p = root / "audio" / "BBC_Sound_Effects" / "07066106.flac"
    p.write_bytes(b"this is not a flac file")
    _tone(root / "Zip_files" / "SoundBible" / "1725.flac")  # the other default layout
    _tone(root / "audio" / "FreeSound" / "180913.flac")
    _tone(root / "audio" / "FreeSound" / "555.flac")
    _tone(root / "audio" / "AudioSet_SL" / "YTTTTTTTTTTT.flac")
    _tone(root / "audio" / "AudioSet_SL" / "YAAAAAAAAAAA.flac")
    return root


def make_musiccaps(root: Path) -> Path:
    header = ["ytid", "start_s", "end_s", "audioset_positive_labels", "aspect_list", "caption", "author_id",
              "is_balanced_subset", "is_audioset_eval"]
    _csv(root / "musiccaps-public.csv", header, [
        ["MMMMMMMMMMM", 30, 40, "/m/04rlf", "['pop', 'mellow piano']", "a calm piano plays", 4, "False", "False"],
        ["NNNNNNNNNNN", 0, 10, "/m/04rlf", "['rock']", "a loud guitar plays", 2, "True", "True"],
        ["OOOOOOOOOOO", 10, 20, "/m/04rlf", "['jazz']", "", 1, "False", "False"],
        ["PPPPPPPPPPP", 10, 20, "/m/04rlf", "['drums']", "drums play", 1, "False", "False"],
        ["QQQQQQQQQQQ", "abc", 20, "/m/04rlf", "['x']", "bad time", 1, "False", "False"],
    ])
    _tone(root / "audio" / "[MMMMMMMMMMM]-[30-40].wav")
    _tone(root / "audio" / "NNNNNNNNNNN.wav")
    return root


def make_audiosetcaps(root: Path) -> Path:
    _csv(root / "Dataset" / "AudioSetCaps_caption.csv", ["id", "caption"], [
        ["SSSSSSSSSSS", "a siren wails"],
        ["BBBBBBBBBBB", "rain falls on a roof"],
        ["bad id!!", "not a youtube clip"],  # malformed id
        ["UUUUUUUUUUU", ""],  # empty caption
    ])
    _csv(root / "Dataset" / "VGGSound_AudioSetCaps_caption.csv", ["id", "caption"], [
        ["VVVVVVVVVVV_000030", "a train horn blows"],
        ["WWWWWWWWWWW_000010", "wind blows"],  # no audio file
    ])
    _csv(root / "Dataset" / "YouTube-8M_AudioSetCaps_caption.csv", ["id", "caption"], [
        ["NNNNNNNNNNN_84_10", "music plays in the background"],  # same video as MusicCaps eval -> dropped
    ])
    (root / "vggsound.csv").write_text("VVVVVVVVVVV,30,train horning,test\nWWWWWWWWWWW,10,wind noise,train\n")
    _tone(root / "audio" / "AudioSet" / "YSSSSSSSSSSS.wav")
    _tone(root / "audio" / "AudioSet" / "BBBBBBBBBBB.wav")
    _tone(root / "audio" / "VGGSound" / "VVVVVVVVVVV_000030.flac")
    _tone(root / "audio" / "YouTube-8M" / "NNNNNNNNNNN_84_10.flac")
    return root


PSC_COLUMNS = ["source", "relative_audio_path", "text_description", "transcription", "intrinsic_tags",
               "situational_tags", "basic_tags", "all_tags", "speakerid", "name", "duration", "gender",
               "accent", "pitch", "speaking_rate", "noise", "utterance_pitch_mean", "snr", "phonemes"]


def _psc_row(source, rel, texts, **kw):
    row = {c: None for c in PSC_COLUMNS}
    row.update(source=source, relative_audio_path=rel, text_description=texts, intrinsic_tags=[], situational_tags=[],
               basic_tags=[], all_tags=[], duration=1.0)
    row.update(kw)
    return row


def _write_rows(path: Path, rows: list[dict]) -> Path:
    """Parquet as published (pyarrow); a .jsonl export of the same rows when pyarrow is absent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        path = path.with_suffix(".jsonl")
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def make_paraspeechcaps(root: Path) -> Path:
    _write_rows(root / "data" / "train_base-00000-of-00001.parquet", [
        _psc_row("voxceleb", "id10001/abc/00001.wav", ["a man speaks slowly", "a deep male voice"],
                 intrinsic_tags=["deep"], situational_tags=["calm"], transcription="hello there",
                 speakerid="id10001", gender="male", accent="american", pitch="low-pitched", speaking_rate="slow"),
        _psc_row("ears", "p001/emo_happy.wav", ["a woman speaks happily"], gender="female",
                 situational_tags=["happy"]),
        _psc_row("expresso", "ex01/missing.wav", ["a whisper"]),  # no audio file
        _psc_row("emilia", "EN/B000001.mp3", []),  # no caption
        _psc_row("", "", ["no source"]),  # malformed
    ])
    _write_rows(root / "data" / "dev-00000-of-00001.parquet", [
        _psc_row("ears", "p002/read.wav", ["a calm reading voice"]),  # dev split: not read by default
    ])
    _tone(root / "corpora" / "VoxCeleb" / "id10001" / "abc" / "00001.wav")
    _tone(root / "corpora" / "ears" / "p001" / "emo_happy.wav")
    _tone(root / "corpora" / "ears" / "p002" / "read.wav")
    _tone(root / "corpora" / "emilia" / "EN" / "B000001.wav")
    return root


def make_jamendomaxcaps(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"id": "1001", "caption": "an upbeat rock song"}),  # no times: the whole track
        json.dumps({"id": "1002", "caption": "", "start_time": 0, "end_time": 30}),  # empty caption
        json.dumps({"id": "1003", "caption": "a slow jazz tune", "start_time": 0, "end_time": 30}),  # no audio
        "{not json",  # malformed
        json.dumps({"id": "1004", "caption": "a soft piano melody", "start_time": 0.0, "end_time": 0.5}),
        json.dumps({"id": 1004, "caption": "a soft piano melody continues", "start_time": 0.5, "end_time": 1.0}),
    ]
    (root / "final_caption30sec.jsonl").write_text("\n".join(lines) + "\n")
    # Track metadata, one file per upload date; tags become labels.
    meta = {"id": "1001", "duration": 1.0, "musicinfo": {"tags": {"genres": ["rock"], "instruments": ["guitar"],
                                                                  "vartags": ["energetic"]}}}
    (root / "2008-01-01.jsonl").write_text(json.dumps(meta) + "\n")
    _tone(root / "audio" / "10" / "1001.mp3")  # Jamendo publishes mp3; any sub-folder
    _tone(root / "audio" / "1004.wav")
    return root


MAKERS = {
    "audiocaps": make_audiocaps,
    "clotho": make_clotho,
    "wavcaps": make_wavcaps,
    "musiccaps": make_musiccaps,
    "audiosetcaps": make_audiosetcaps,
    "paraspeechcaps": make_paraspeechcaps,
    "jamendomaxcaps": make_jamendomaxcaps,
}


def make_all(base: Path) -> dict[str, Path]:
    """Generate every fixture corpus under ``base``; returns {name: root} in the stew's source order."""
    return {name: make(Path(base) / name) for name, make in MAKERS.items()}


# ---------------------------------------------------------------------------------------------------------
# Focused fixtures for single behaviours (each in the corpus' published layout)
def _ramp(path: Path, seconds: float, sr: int = SR) -> None:
    """A float wav whose sample value is its time in kiloseconds (t / 1000), so a cut's first sample tells
    where in the file the cut starts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(round(seconds * sr))) / sr
    subtype = "FLOAT" if path.suffix == ".wav" else "PCM_24"  # flac has no float samples
    sf.write(path, (t / 1000.0).astype(np.float32), sr, subtype=subtype)


MUSICCAPS_HEADER = ["ytid", "start_s", "end_s", "audioset_positive_labels", "aspect_list", "caption", "author_id",
                    "is_balanced_subset", "is_audioset_eval"]
AUDIOCAPS_HEADER = ["audiocap_id", "youtube_id", "start_time", "caption"]


def make_full_video_copies(base: Path) -> dict[str, Path]:
    """Corpora whose audio is (partly) the whole YouTube video saved under the bare id, as yt-dlp scripts
    that skip the trimming step leave it. Each clip's expected cut is in the comments."""
    mc = base / "musiccaps"
    _csv(mc / "musiccaps-public.csv", MUSICCAPS_HEADER, [
        ["-0Gj8-vB1q4", 30, 40, "", "['pop']", "a pop song", 4, "False", "False"],  # 45 s video -> [30, 40)
        ["k0Gj8-vB1q4", 30, 40, "", "['rock']", "a rock song", 4, "False", "False"],  # 10.5 s file = the clip
        ["z0Gj8-vB1q4", 100, 110, "", "['jazz']", "a jazz tune", 4, "False", "False"],  # 20 s file: neither
        ["a0Gj8-vB1q4", 30, 40, "", "['folk']", "a folk song", 4, "False", "False"],  # AudioSet name
    ])
    _ramp(mc / "audio" / "-0Gj8-vB1q4.wav", 45.0)
    _ramp(mc / "audio" / "k0Gj8-vB1q4.wav", 10.5)
    _ramp(mc / "audio" / "z0Gj8-vB1q4.wav", 20.0)
    _ramp(mc / "audio" / "Ya0Gj8-vB1q4_30.000_40.000.wav", 10.0)

    ac = base / "audiocaps"
    _csv(ac / "train.csv", AUDIOCAPS_HEADER, [
        [1, "--0w1YA1Hm4", 25, "a dog barks"],  # 40 s video -> [25, 35)
        [2, "-20w1YA1Hm4", 25, "a cat meows"],  # 31 s video ending inside the clip -> [25, 31)
        [3, "-30w1YA1Hm4", 30, "a bird sings"],  # AudioSet name Y<id>_30.000_40.000
        [4, "-40w1YA1Hm4", 30, "a car honks"],  # AudioSet segment cut short by the video's end: _30.000_38.000
        [5, "-50w1YA1Hm4", 0, "wind blows"],  # a 1 s file named by the bare id: the clip itself
    ])
    _ramp(ac / "audio" / "--0w1YA1Hm4.wav", 40.0)
    _ramp(ac / "audio" / "Y-20w1YA1Hm4.wav", 31.0)
    _ramp(ac / "audio" / "Y-30w1YA1Hm4_30.000_40.000.wav", 10.0)
    _ramp(ac / "audio" / "Y-40w1YA1Hm4_30.000_38.000.wav", 8.0)
    _ramp(ac / "audio" / "-50w1YA1Hm4.wav", 1.0)

    asc = base / "audiosetcaps"
    _csv(asc / "Dataset" / "AudioSetCaps_caption.csv", ["id", "caption"], [
        ["Y-60w1YA1Hm4", "a horn blows"],  # no time in the id; file in AudioSet naming -> span from the name
    ])
    _csv(asc / "Dataset" / "VGGSound_AudioSetCaps_caption.csv", ["id", "caption"], [
        ["-70w1YA1Hm4_000030", "a train passes"],  # 45 s video under the bare id -> [30, 40)
    ])
    _ramp(asc / "audio" / "AudioSet" / "Y-60w1YA1Hm4_20.000_30.000.wav", 10.0)
    _ramp(asc / "audio" / "VGGSound" / "-70w1YA1Hm4.wav", 45.0)

    wc = base / "wavcaps"
    p = wc / "json_files" / "AudioSet_SL" / "as_final.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps({"num_captions_per_audio": 1, "data": [
        {"id": "Y-80w1YA1Hm4.wav", "caption": "a drill whirs", "audio": "wav_path", "duration": 10.0}]}))
    _ramp(wc / "audio" / "AudioSet_SL" / "Y-80w1YA1Hm4_10.000_20.000.flac", 10.0)  # AudioSet naming only
    return {"musiccaps": mc, "audiocaps": ac, "audiosetcaps": asc, "wavcaps": wc}


def make_audiocaps_broken_lines(root: Path) -> Path:
    """AudioCaps 2.0 train.csv as published before cdjkim/audiocaps PR #31: unquoted line breaks inside
    captions (the continuation is a line of its own), plus empty caption rows."""
    (root / "audio").mkdir(parents=True, exist_ok=True)
    (root / "train.csv").write_text(
        "audiocap_id,youtube_id,start_time,caption\n"
        "39899,IAosP90cdsE,30,an engine chugging loudly with muffled\n"
        "speech in the background\n"
        "48170,NWZK4Mm3aNc,0,heavy wind followed by a loud\n"
        "bang\n"
        "48171,NWZK4Mm3aNc,0,a bang in the wind\n"
        "50000,bad\n",  # a real malformed row (2 fields): still reported
        encoding="utf-8")
    (root / "val.csv").write_text(
        "audiocap_id,youtube_id,start_time,caption\n"
        "1,abcdefghijk,30,a dog barks\n2,abcdefghijk,30,\n3,abcdefghijk,30,dog barking\n"
        "4,abcdefghijk,30,\n5,abcdefghijk,30,a dog\n"
        + "".join(f"{10 + i},bbbbbbbbbbb,0,\n" for i in range(5)),  # a clip whose 5 captions are all empty
        encoding="utf-8")
    for name in ("IAosP90cdsE_30", "NWZK4Mm3aNc_0", "abcdefghijk_30", "bbbbbbbbbbb_0"):
        _tone(root / "audio" / f"{name}.wav")
    return root


def make_clotho_nfd(root: Path) -> Path:
    """A Clotho development split whose csv names a file in NFC while the archive stored it in NFD."""
    import unicodedata

    name = "Café ambience.wav"
    header = ["file_name"] + [f"caption_{i}" for i in range(1, 6)]
    _csv(root / "clotho_captions_development.csv", header,
         [[unicodedata.normalize("NFC", name)] + ["people talk in a cafe"] * 5])
    _tone(root / "development" / unicodedata.normalize("NFD", name))
    return root
