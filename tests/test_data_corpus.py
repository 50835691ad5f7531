"""Corpus building faithful to the authors' setup: WavCaps' blacklist stays inside WavCaps, absolute audio
paths, loud missing audio, truncated files skipped, stereo downmixed, the authors' manifest layout read."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet, MonoCut, Recording, SupervisionSegment

import fixtures_sources as F
from audiolp.data.loader import LoaderConfig, make_dataloader
from audiolp.data.schema import cut_captions, cut_labels, load_manifest, make_caption_cut
from audiolp.data.sources import load_source
from audiolp.data.stew import MISSING_NAME, EmptyBuildError, build_captionstew

AC_HEADER = ["audiocap_id", "youtube_id", "start_time", "caption"]


def _csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header] + rows)


def _wavcaps_json(root: Path, subset: str, entries: list[dict]) -> None:
    p = root / "json_files" / subset / "x.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps({"num_captions_per_audio": 1, "data": entries}))


# ---------------------------------------------------------------------------------------------------------
# 1. WavCaps' blacklist names AudioCaps val + test and Clotho val + eval: it leaves out WavCaps clips only
def _ac_and_wavcaps(base: Path) -> tuple[Path, Path]:
    ac = base / "audiocaps"
    _csv(ac / "train.csv", AC_HEADER, [[1, "trainvid001", 0, "a dog barks"], [2, "trainvid002", 0, "rain"]])
    _csv(ac / "val.csv", AC_HEADER, [[3, "valvideo001", 0, "a bell rings"], [4, "valvideo001", 0, "bells"]])
    _csv(ac / "test.csv", AC_HEADER, [[5, "testvideo01", 0, "a man talks"]])
    for ytid in ("trainvid001", "trainvid002", "valvideo001", "testvideo01"):
        F._tone(ac / "audio" / f"{ytid}.wav")
    wc = base / "wavcaps"
    _wavcaps_json(wc, "AudioSet_SL", [
        {"id": f"Y{y}.wav", "caption": f"wavcaps {y}"}
        for y in ("trainvid001", "valvideo001", "testvideo01", "othervid001")])
    _wavcaps_json(wc, "FreeSound", [{"id": "42", "caption": "a clotho copy"}, {"id": "43", "caption": "a tap"}])
    for y in ("trainvid001", "valvideo001", "testvideo01", "othervid001"):
        F._tone(wc / "audio" / "AudioSet_SL" / f"Y{y}.flac")
    F._tone(wc / "audio" / "FreeSound" / "42.flac")
    F._tone(wc / "audio" / "FreeSound" / "43.flac")
    bl = wc / "json_files" / "blacklist" / "blacklist_exclude_test_ac.json"
    bl.parent.mkdir(parents=True)
    # as in the real file: AudioCaps val and test videos under "AudioSet", Clotho copies under "FreeSound"
    bl.write_text(json.dumps({"AudioSet": ["Yvalvideo001.wav", "Ytestvideo01.wav"], "FreeSound": ["42"]}))
    return ac, wc


def test_wavcaps_blacklist_keeps_audiocaps_val(tmp_path):
    ac, wc = _ac_and_wavcaps(tmp_path)
    ids = lambda report: {c.id for c in load_manifest(report.manifest)}  # noqa: E731
    alone_ac = ids(build_captionstew({"audiocaps": ac}, tmp_path / "ac"))
    alone_wc = ids(build_captionstew({"wavcaps": wc}, tmp_path / "wc"))
    assert alone_ac == {"audiocaps/trainvid001_0", "audiocaps/trainvid002_0", "audiocaps/valvideo001_0"}
    assert alone_wc == {"wavcaps/audioset_sl/Ytrainvid001", "wavcaps/audioset_sl/Yothervid001",
                        "wavcaps/freesound/43"}
    both = build_captionstew({"audiocaps": ac, "wavcaps": wc}, tmp_path / "both")
    cuts = {c.id: c for c in load_manifest(both.manifest)}
    merged = {m for c in cuts.values() for m in c.supervisions[0].custom.get("merged_from", [])}
    assert merged == {"wavcaps/audioset_sl/Ytrainvid001"}  # the one true cross-corpus duplicate
    assert set(cuts) == (alone_ac | alone_wc) - merged
    assert "audiocaps/valvideo001_0" in cuts  # blacklisted for WavCaps, still an AudioCaps validation clip
    assert cut_captions(cuts["audiocaps/trainvid001_0"]) == ["a dog barks", "wavcaps trainvid001"]
    assert both.inputs["wavcaps"]["excluded"] == 3 and both.inputs["wavcaps"]["dropped_eval_overlap"] == 0
    assert both.inputs["audiocaps"]["dropped_eval_overlap"] == 1  # its own test clip only
    assert both.stats["build"]["eval_ids"] == 1  # AudioCaps test only


# ---------------------------------------------------------------------------------------------------------
# 2. A relative --source writes absolute audio paths
def test_relative_source_writes_absolute_paths(tmp_path, monkeypatch):
    F.make_clotho(tmp_path / "work" / "clotho")
    monkeypatch.chdir(tmp_path / "work")
    report = build_captionstew({"clotho": "clotho"}, "out")
    monkeypatch.chdir(tmp_path)  # anywhere else
    cuts = list(load_manifest(tmp_path / "work" / "out" / "cuts.jsonl.gz"))
    assert len(cuts) == 2
    for c in cuts:
        path = c.recording.sources[0].source
        assert os.path.isabs(path) and path.startswith(str(tmp_path / "work" / "clotho"))
        assert c.load_audio().shape == (1, 16000)
    assert report.stats["build"]["sources"]["clotho"]["root"] == str(tmp_path / "work" / "clotho")


# ---------------------------------------------------------------------------------------------------------
# 3. Audio not where the adapter looks: a loud warning, a list of rows, and an error for an empty build
def _wavcaps_at_root(root: Path) -> tuple[Path, dict]:
    _wavcaps_json(root, "FreeSound", [{"id": str(i), "caption": f"sound {i}"} for i in range(3)])
    for i in range(3):  # unzipped into the root itself, not audio/FreeSound or FreeSound/
        F._tone(root / f"{i}.flac")
    return root, {"blacklists": ()}


def _paraspeechcaps_without_roots(root: Path) -> tuple[Path, dict]:
    F.make_paraspeechcaps(root)  # audio lives in corpora/<corpus>/; only audio_roots would say so
    return root, {}


def _vggsound_as_mp4(root: Path) -> tuple[Path, dict]:
    _csv(root / "Dataset" / "VGGSound_AudioSetCaps_caption.csv", ["id", "caption"],
         [[f"vggvideo00{i}_000030", f"a sound {i}"] for i in range(3)])
    for i in range(3):
        p = root / "audio" / "VGGSound" / f"vggvideo00{i}_000030.mp4"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"\x00\x00\x00\x18ftypmp42")  # a video, left unextracted
    return root, {"subsets": ("VGGSound",)}


@pytest.mark.parametrize("name, make, searched, expected, extra", [
    ("wavcaps", _wavcaps_at_root, "wavcaps/audio/FreeSound", "wavcaps/audio/FreeSound/0.flac", ""),
    ("paraspeechcaps", _paraspeechcaps_without_roots, "paraspeechcaps/voxceleb",
     "paraspeechcaps/id10001/abc/00001.wav", ""),
    ("audiosetcaps", _vggsound_as_mp4, "audiosetcaps/audio/VGGSound",
     "audiosetcaps/audio/VGGSound/vggvideo000_000030.flac", "3 .mp4"),
])
def test_audio_not_where_the_adapter_looks(tmp_path, name, make, searched, expected, extra):
    root, options = make(tmp_path / name)
    with pytest.warns(UserWarning, match="rows found no audio file") as caught:
        ld = load_source(name, root, **options)
    assert len(ld.cuts) == 0 and ld.missing_audio == 3
    message = ld.warnings[-1]
    assert str(caught[-1].message) == message
    assert f"3 of {ld.rows} rows found no audio file" in message
    assert str(tmp_path / searched) in message and str(tmp_path / expected) in message
    assert extra in message
    assert len(ld.missing) == 3 and all("no audio file (expected e.g. /" in m for m in ld.missing)
    out = tmp_path / "out"
    with pytest.warns(UserWarning), pytest.raises(EmptyBuildError, match="no clip left") as err:
        build_captionstew([(name, root, options)], out)
    assert isinstance(err.value, ValueError)
    assert str(tmp_path / searched) in str(err.value) and str(tmp_path / expected) in str(err.value)
    assert not out.exists()  # nothing written


def test_missing_audio_warning_in_build_report(tmp_path):
    (good := F.make_clotho(tmp_path / "clotho"))
    root, options = _wavcaps_at_root(tmp_path / "wavcaps")
    with pytest.warns(UserWarning, match="found no audio"):
        report = build_captionstew([("clotho", good), ("wavcaps", root, options)], tmp_path / "out")
    on_disk = json.loads(report.stats_path.read_text())
    assert "3 of 3 rows found no audio file" in on_disk["build"]["warnings"]["wavcaps"][0]
    listed = (tmp_path / "out" / MISSING_NAME).read_text().splitlines()
    assert sum(line.startswith("[wavcaps] ") for line in listed) == 3
    assert sum(line.startswith("[clotho] ") for line in listed) == 1  # Clotho's one missing row, no warning
    assert "clotho" not in on_disk["build"]["warnings"]


# ---------------------------------------------------------------------------------------------------------
# 4. Truncated audio: skipped at prepare time, listed with the reason
def test_truncated_flac_is_skipped_and_listed(tmp_path):
    root = tmp_path / "clotho"
    header = ["file_name"] + [f"caption_{i}" for i in range(1, 6)]
    _csv(root / "clotho_captions_development.csv", header,
         [["whole.wav"] + ["a whole clip"] * 5, ["cut short.wav"] + ["a cut clip"] * 5,
          ["short wav.wav"] + ["a short wav"] * 5])
    F._tone(root / "development" / "whole.flac", seconds=3.0)
    F._tone(root / "development" / "cut short.flac", seconds=3.0)
    F._tone(root / "development" / "short wav.wav", seconds=3.0)
    for name in ("cut short.flac", "short wav.wav"):  # an interrupted download: the header stays whole
        p = root / "development" / name
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    ld = load_source("clotho", root, splits=("development",))
    assert sf.info(str(root / "development" / "cut short.flac")).frames == 48000  # the header still says 3 s
    ids = {c.id: c for c in ld.cuts}
    assert "clotho/development/cut short" not in ids
    assert len(ld.malformed) == 1 and "cut short.flac: truncated audio" in ld.malformed[0]
    assert "48000 frames" in ld.malformed[0] and "clotho_captions_development.csv:3" in ld.malformed[0]
    # libsndfile sizes a WAV by its data: the cut is the part that is there and it loads whole
    wav = ids["clotho/development/short wav"]
    assert wav.duration == pytest.approx(1.5, abs=0.01) and wav.load_audio().shape[1] == wav.num_samples
    report = build_captionstew([("clotho", root, {"splits": ("development",)})], tmp_path / "out")
    assert report.inputs["clotho"]["malformed"] == 1 and report.num_cuts == 2
    assert "truncated audio" in (tmp_path / "out" / "malformed.txt").read_text()


# ---------------------------------------------------------------------------------------------------------
# 5. Stereo files are downmixed: the loaded samples are the mean of the channels
@pytest.mark.parametrize("sr", [16000, 8000])
def test_stereo_is_downmixed_to_the_channel_mean(tmp_path, sr):
    root = tmp_path / "clotho"
    _csv(root / "clotho_captions_development.csv", ["file_name"] + [f"caption_{i}" for i in range(1, 6)],
         [["stereo.wav"] + ["two channels"] * 5])
    t = np.arange(sr) / sr
    left, right = 0.5 * np.sin(2 * np.pi * 440 * t), 0.25 * np.sign(np.sin(2 * np.pi * 3 * t))
    (root / "development").mkdir(parents=True)
    sf.write(root / "development" / "stereo.wav", np.stack([left, right], 1).astype(np.float32), sr, subtype="FLOAT")
    report = build_captionstew([("clotho", root, {"splits": ("development",)})], tmp_path / "out")
    (cut,) = list(load_manifest(report.manifest))  # through the written manifest
    audio = cut.load_audio()
    assert audio.shape == (1, 16000)
    if sr == 16000:
        np.testing.assert_allclose(audio[0], (left + right) / 2, atol=1e-6)
        assert not np.allclose(audio[0], left, atol=1e-2)  # not channel 0
    else:  # downmixed, then resampled: equal to a mono file of the mean resampled the same way
        sf.write(tmp_path / "mean.wav", ((left + right) / 2).astype(np.float32), sr, subtype="FLOAT")
        mono = make_caption_cut("m", Recording.from_file(tmp_path / "mean.wav"), "x", "s", "sound")
        np.testing.assert_allclose(audio, mono.load_audio(), atol=1e-6)
        assert cut.recording.transforms[0].to_dict()["name"] == "DownmixMono"


# ---------------------------------------------------------------------------------------------------------
# 6. The authors' manifests load as they are
def _authors_manifest(tmp_path: Path) -> Path:
    cuts = []
    for i, custom in enumerate([{"audio_tag": "Speech;Music", "caption": "a dog barks"},
                                {"audio_tag": ["Dog", "Bark"], "caption": ["a dog", "barking"]},
                                {"labels": ["Ours"], "audio_tag": "Theirs", "caption": "both fields"}]):
        path = tmp_path / f"a{i}.wav"
        F._tone(path, seconds=1.0)
        rec = Recording.from_file(path, recording_id=f"a{i}")
        sup = SupervisionSegment(id=f"a{i}", recording_id=f"a{i}", start=0.0, duration=1.0, custom=custom)
        cuts.append(MonoCut(id=f"a{i}", start=0.0, duration=1.0, channel=0, recording=rec, supervisions=[sup]))
    path = tmp_path / "theirs.jsonl.gz"
    CutSet.from_cuts(cuts).to_file(path)
    return path


def test_authors_layout_captions_and_tags(tmp_path):
    cuts = {c.id: c for c in load_manifest(_authors_manifest(tmp_path))}
    assert cut_captions(cuts["a0"]) == ["a dog barks"] and cut_captions(cuts["a1"]) == ["a dog", "barking"]
    assert cut_labels(cuts["a0"]) == ["Speech", "Music"] and cut_labels(cuts["a1"]) == ["Dog", "Bark"]
    assert cut_labels(cuts["a2"]) == ["Ours"]  # field=None: 'labels' first
    assert cut_labels(cuts["a2"], field="audio_tag") == ["Theirs"]
    assert cut_labels(cuts["a0"], field="labels") == []  # a named field only
    # a supervision attribute (no custom dict) is read too
    sup = SupervisionSegment(id="x", recording_id="x", start=0.0, duration=1.0)
    sup.audio_tag, sup.caption = "A; B", "an attribute caption"  # lhotse keeps them in custom
    cut = MonoCut(id="x", start=0.0, duration=1.0, channel=0, supervisions=[sup])
    assert cut_labels(cut, field="audio_tag") == ["A", "B"] and cut_captions(cut) == ["an attribute caption"]


@pytest.mark.parametrize("field, expected", [
    (None, {"a0": ["Speech", "Music"], "a1": ["Dog", "Bark"], "a2": ["Ours"]}),
    ("audio_tag", {"a0": ["Speech", "Music"], "a1": ["Dog", "Bark"], "a2": ["Theirs"]}),
])
def test_loader_reads_the_authors_layout(tmp_path, field, expected):
    cuts = load_manifest(_authors_manifest(tmp_path)).to_eager()  # eager: 3 cuts, no bucketing
    cfg = LoaderConfig(max_duration=100.0, spec_augment=False, shuffle=False, label_field=field)
    batch = next(iter(make_dataloader(cuts, cfg, train=False)))
    got = dict(zip(batch["cut_ids"], batch["labels"]))
    assert got == expected
    caps = dict(zip(batch["cut_ids"], batch["captions"]))
    assert caps["a0"] == ["a dog barks"] and caps["a1"] == ["a dog", "barking"]
    assert batch["features"].shape[0] == 3
