"""Downstream dataset adapters (audiolp.data.downstream) on tiny copies in the published layouts, the user tasks
(folder + csv, labelled manifest) and `audiolp prepare task`."""
from __future__ import annotations

import json
import warnings

import pytest
from lhotse import CutSet, MonoCut, Recording, SupervisionSegment

import fixtures_downstream as fx
from audiolp.cli import main
from audiolp.data.downstream import load_task_data, prepare_task
from audiolp.data.downstream.common import hash_split
from audiolp.data.schema import cut_labels, save_manifest
from audiolp.data.tasks import load_task_registry, load_task_split

pytestmark = pytest.mark.filterwarnings("ignore")


def build(name, tmp_path, **options):
    src = fx.MAKERS[name](tmp_path / name)
    out = tmp_path / "out"
    specs, lines = prepare_task(name, src, out, **options)
    return out, load_task_registry(out / "tasks.json"), lines


def splits(out, spec) -> dict[str, CutSet]:
    return {s: load_task_split(spec, s, out) for s in spec.splits}


def counts(out, spec) -> dict[str, int]:
    return {s: len(c) for s, c in splits(out, spec).items()}


def check_cuts(out, spec, source, domain, audio=True):
    """Every cut: 16 kHz MonoCut, labels inside the task's label set, source/domain; one clip per split loads
    at 16 kHz."""
    for s, cuts in splits(out, spec).items():
        for c in cuts:
            assert isinstance(c, MonoCut) and c.sampling_rate == 16_000
            custom = c.supervisions[0].custom
            assert custom["source"] == source and custom["domain"] == domain
            assert cut_labels(c) and set(cut_labels(c)) <= set(spec.labels)
            if spec.kind == "multiclass":
                assert len(cut_labels(c)) == 1
        if audio:
            c = cuts[0]
            x = c.load_audio()
            assert x.shape[0] == 1 and abs(x.shape[1] - round(c.duration * 16_000)) <= 2


def test_esc50_folds(tmp_path):
    out, reg, lines = build("esc50", tmp_path)
    assert sorted(reg) == [f"esc50_fold{k}" for k in range(1, 6)]
    for k in range(1, 6):
        spec = reg[f"esc50_fold{k}"]
        assert spec.kind == "multiclass" and spec.metric == "accuracy" and spec.labels == ["dog", "rain"]
        assert spec.domain == "sound"
        assert counts(out, spec) == {"train": 6, "val": 2, "test": 2}
        folds = {s: {c.supervisions[0].custom["fold"] for c in cs} for s, cs in splits(out, spec).items()}
        val = k % 5 + 1
        assert folds == {"test": {k}, "val": {val}, "train": set(range(1, 6)) - {k, val}}
    check_cuts(out, reg["esc50_fold1"], "esc50", "sound")
    cut = load_task_split(reg["esc50_fold1"], "test", out)[0]
    assert cut.recording.sampling_rate == 16_000 and cut.recording.transforms  # 44.1 kHz file, resampled on load
    assert "3-999999-A-0" in (out / "missing_audio.txt").read_text()
    assert any("1 without audio" in ln for ln in lines)


def test_urbansound8k_folds(tmp_path):
    out, reg, _ = build("urbansound8k", tmp_path)
    assert len(reg) == 10
    spec = reg["urbansound8k_fold10"]
    assert spec.labels == ["air_conditioner", "dog_bark"]
    assert counts(out, spec) == {"train": 8, "val": 1, "test": 1}
    assert {c.supervisions[0].custom["fold"] for c in load_task_split(spec, "val", out)} == {1}
    check_cuts(out, reg["urbansound8k_fold1"], "urbansound8k", "sound")  # fold 1 is a 48 kHz stereo file


def test_fsd50k_multilabel(tmp_path):
    out, reg, _ = build("fsd50k", tmp_path)
    spec = reg["fsd50k"]
    assert (spec.kind, spec.metric, spec.labels) == ("multilabel", "mAP", ["Bark", "Music", "Speech"])
    assert counts(out, spec) == {"train": 4, "val": 2, "test": 2}
    test = {c.id: cut_labels(c) for c in load_task_split(spec, "test", out)}
    assert test["fsd50k/37199"] == ["Music", "Speech", "Bark"]
    check_cuts(out, spec, "fsd50k", "sound")


def test_voxceleb1_iden_split(tmp_path):
    out, reg, _ = build("voxceleb1", tmp_path)
    spec = reg["voxceleb1_sid"]
    assert spec.labels == ["id10001", "id10002", "id10003"] and spec.domain == "speech"
    assert counts(out, spec) == {"train": 6, "val": 3, "test": 3}
    assert {cut_labels(c)[0] for c in load_task_split(spec, "test", out)} == set(spec.labels)
    check_cuts(out, spec, "voxceleb1", "speech")


def test_cremad_speaker_disjoint(tmp_path):
    out, reg, _ = build("cremad", tmp_path)
    spec = reg["cremad"]
    assert spec.labels == ["anger", "disgust", "fear", "happy", "neutral", "sad"]
    assert counts(out, spec) == {"train": 3, "val": 1, "test": 2}
    speakers = {s: {c.supervisions[0].custom["speaker"] for c in cs} for s, cs in splits(out, spec).items()}
    assert speakers == {"train": {"1001", "1002"}, "val": {"1074"}, "test": {"1085"}}
    assert cut_labels(load_task_split(spec, "val", out)[0]) == ["neutral"]
    check_cuts(out, spec, "cremad", "speech")


def test_magnatagatune_top_tags_and_folder_split(tmp_path):
    out, reg, _ = build("magnatagatune", tmp_path)
    spec = reg["magnatagatune"]
    assert spec.labels == ["guitar", "classical", "slow", "techno"]  # by frequency; 'rare' never occurs
    assert counts(out, spec) == {"train": 3, "val": 1, "test": 2}
    check_cuts(out, spec, "magnatagatune", "music")  # mp3 clips
    dl = load_task_data("magnatagatune", tmp_path / "magnatagatune", top=3)
    assert dl.tasks[0].labels == ["guitar", "classical", "slow"]
    assert dl.load.excluded == 1 and dl.load.missing_audio == 1  # the techno-only clip; the 'e/' clip
    by_split = {}
    for c in dl.load.cuts:
        by_split.setdefault(c.supervisions[0].custom["split"], []).append(c.id)
    assert {k: len(v) for k, v in by_split.items()} == {"train": 2, "val": 1, "test": 2}
    assert cut_labels(next(c for c in dl.load.cuts if c.id == "magnatagatune/2")) == ["guitar", "classical"]


def test_nsynth(tmp_path):
    out, reg, _ = build("nsynth", tmp_path)
    spec = reg["nsynth_instrument"]
    assert spec.labels == ["bass", "guitar"]
    assert counts(out, spec) == {"train": 3, "val": 1, "test": 2}
    check_cuts(out, spec, "nsynth", "music")


def test_gtzan_hash_and_filtered_split(tmp_path):
    out, reg, _ = build("gtzan", tmp_path)
    spec = reg["gtzan"]
    assert spec.labels == ["blues", "rock"]
    assert counts(out, spec) == {"train": 16, "val": 2, "test": 2}
    for s, cs in splits(out, spec).items():  # stratified: each genre in each split
        assert {cut_labels(c)[0] for c in cs} == {"blues", "rock"}
    check_cuts(out, spec, "gtzan", "music")
    root = tmp_path / "gtzan"
    (root / "train_filtered.txt").write_text("blues/blues.00000.au\nrock/rock.00001.au\nrock/rock.00002.au\n")
    (root / "valid_filtered.txt").write_text("blues/blues.00003.au\n")
    (root / "test_filtered.txt").write_text("rock/rock.00004.au\n")
    dl = load_task_data("gtzan", root)
    assert dl.load.excluded == 15 and len(dl.load.cuts) == 5
    assert {c.id: c.supervisions[0].custom["split"] for c in dl.load.cuts}["gtzan/blues.00003"] == "val"


def test_vocalsound_datafiles_and_speaker_split(tmp_path):
    out, reg, _ = build("vocalsound", tmp_path)
    spec = reg["vocalsound"]
    assert spec.labels == ["laughter", "sigh", "cough", "throatclearing", "sneeze", "sniff"]
    assert counts(out, spec) == {"train": 2, "val": 1, "test": 2}
    check_cuts(out, spec, "vocalsound", "speech")
    dl = load_task_data("vocalsound", fx.make_vocalsound(tmp_path / "vs2", datafiles=False))
    assert len(dl.load.cuts) == 6
    by_speaker = {}
    for c in dl.load.cuts:
        custom = c.supervisions[0].custom
        by_speaker.setdefault(custom["speaker"], set()).add(custom["split"])
        assert custom["split"] == hash_split(f"vocalsound:{custom['speaker']}")
    assert all(len(v) == 1 for v in by_speaker.values())  # speaker-disjoint


def test_libricount(tmp_path):
    out, reg, _ = build("libricount", tmp_path)
    spec = reg["libricount"]
    assert spec.labels == ["0", "1", "2"]
    assert counts(out, spec) == {"train": 6, "val": 3, "test": 3}
    check_cuts(out, spec, "libricount", "speech")


def test_audioset_strong_sed(tmp_path):
    out, reg, _ = build("audioset_strong", tmp_path)
    spec = reg["audioset_strong"]
    assert (spec.kind, spec.metric, spec.labels) == ("sed", "segment_f1", ["Bark", "Speech"])
    n = counts(out, spec)
    assert n["test"] == 2 and n.get("train", 0) + n.get("val", 0) == 3  # one train segment has no audio
    test = {c.id: c.supervisions[0].custom["events"] for c in load_task_split(spec, "test", out)}
    assert test["audioset_strong/GHIJKLMNOPQ_40000"] == [["Speech", 0.0, 10.0], ["Bark", 3.0, 3.5]]
    train_ids = {c.id for s in ("train", "val") if s in spec.splits for c in load_task_split(spec, s, out)}
    assert "audioset_strong/-wxyzABCDEF_10000" in train_ids  # found as Y-wxyzABCDEF_10.000_20.000.flac
    check_cuts(out, spec, "audioset_strong", "sound")


def test_vggsound(tmp_path):
    out, reg, _ = build("vggsound", tmp_path)
    spec = reg["vggsound"]
    assert len(spec.labels) == 5 and "people marching" in spec.labels
    n = counts(out, spec)
    assert n["test"] == 2 and n.get("train", 0) + n.get("val", 0) == 5
    check_cuts(out, spec, "vggsound", "sound")


def test_folder_task(tmp_path):
    root = tmp_path / "my_sounds"
    rows = []
    for k in range(12):
        label = ("door", "bell", "door;bell")[k % 3] if k < 6 else ("door", "bell")[k % 2]
        split = ("train", "valid", "test")[k % 3] if k < 3 else ""
        fx.tone(root / "clips" / f"c{k:02d}.flac", 22_050)
        rows.append([f"clips/c{k:02d}.flac", label, split])
    rows.append(["clips/absent.wav", "door", "train"])
    fx.write_csv(root / "labels.csv", ["file", "label", "split"], rows)
    out = tmp_path / "out"
    specs, _ = prepare_task("folder", root, out)
    spec = load_task_registry(out / "tasks.json")["my_sounds"]
    assert (spec.kind, spec.metric, spec.labels) == ("multilabel", "mAP", ["bell", "door"])
    assert sum(counts(out, spec).values()) == 12
    cuts = {c.id: c for s in spec.splits for c in load_task_split(spec, s, out)}
    assert cut_labels(cuts["my_sounds/clips/c02"]) == ["door", "bell"]
    assert cuts["my_sounds/clips/c01"].supervisions[0].custom["split"] == "val"
    assert "absent" in (out / "missing_audio.txt").read_text()
    check_cuts(out, spec, "my_sounds", "sound")
    # single labels: multiclass, and no split column -> deterministic stratified split
    fx.write_csv(root / "single.csv", ["file", "label"], [[f"clips/c{k:02d}.flac", ("door", "bell")[k % 2]] for k in range(12)])
    specs, _ = prepare_task("folder", root, out, csv_path=root / "single.csv", task_name="single")
    reg = load_task_registry(out / "tasks.json")
    assert set(reg) == {"my_sounds", "single"} and reg["single"].kind == "multiclass"
    assert counts(out, reg["single"]) == {"train": 8, "val": 2, "test": 2}


def test_manifest_task(tmp_path):
    cuts = []
    for k in range(9):
        path = fx.tone(tmp_path / "wav" / f"u{k}.wav", 8_000)
        rec = Recording.from_file(path, recording_id=f"u{k}")
        sup = SupervisionSegment(id=f"u{k}", recording_id=f"u{k}", start=0, duration=rec.duration,
                                 custom={"speaker": f"spk{k % 3}", **({"split": "test"} if k < 3 else {})})
        cuts.append(MonoCut(id=f"u{k}", start=0, duration=rec.duration, channel=0, recording=rec, supervisions=[sup]))
    manifest = save_manifest(cuts, tmp_path / "speakers.jsonl.gz")
    out = tmp_path / "out"
    prepare_task("manifest", manifest, out, label_field="speaker", domain="speech")
    spec = load_task_registry(out / "tasks.json")["speakers"]
    assert (spec.kind, spec.labels) == ("multiclass", ["spk0", "spk1", "spk2"])
    n = counts(out, spec)
    assert n["test"] >= 3 and sum(n.values()) == 9
    assert {c.id for c in load_task_split(spec, "test", out)} >= {"u0", "u1", "u2"}
    check_cuts(out, spec, "speakers", "speech")
    with pytest.raises(ValueError, match="no cut with labels in field 'emotion'"):
        prepare_task("manifest", manifest, out, label_field="emotion")


def test_cli_prepare_task_end_to_end(tmp_path, capsys):
    src = fx.make_esc50(tmp_path / "ESC-50-master")
    out = tmp_path / "tasks"
    assert main(["prepare", "task", "esc50", "--source", str(src), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "esc50_fold1: train 6 / val 2 / test 2 clips, 2 classes" in printed
    reg = json.loads((out / "tasks.json").read_text())
    assert reg["version"] == 1 and len(reg["tasks"]) == 5
    assert (out / "tasks/esc50_fold3/train.jsonl.gz").exists() and (out / "missing_audio.txt").exists()
    fx.make_cremad(tmp_path / "CREMA-D")
    assert main(["prepare", "task", "cremad", "--source", str(tmp_path / "CREMA-D"), "--out", str(out)]) == 0
    assert set(load_task_registry(out / "tasks.json")) == {f"esc50_fold{k}" for k in range(1, 6)} | {"cremad"}
    manifest = tmp_path / "m.jsonl.gz"
    spec = load_task_registry(out / "tasks.json")["cremad"]
    save_manifest([c for s in ("train", "val", "test") for c in load_task_split(spec, s, out)], manifest)
    assert main(["prepare", "task", "manifest", "--manifest", str(manifest), "--label-field", "labels",
                 "--name", "cremad_copy", "--out", str(out)]) == 0
    copy = load_task_registry(out / "tasks.json")["cremad_copy"]
    assert counts(out, copy) == {"train": 3, "val": 1, "test": 2}  # the manifest's own split is kept


def test_wrong_folder_errors(tmp_path, capsys):
    empty = tmp_path / "not_esc50"
    empty.mkdir()
    assert main(["prepare", "task", "esc50", "--source", str(empty), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "esc50" in err and "meta/esc50.csv" in err and "published layout" in err
    # metadata present but no audio: an error naming where it looked and an example path, never an empty task
    root = fx.make_esc50(tmp_path / "esc")
    for p in (root / "audio").iterdir():
        p.unlink()
    with pytest.raises(FileNotFoundError, match=r"no audio found.*Looked in: .*audio.*1-100031-A-0.wav"):
        prepare_task("esc50", root, tmp_path / "o")
    assert not (tmp_path / "o" / "tasks.json").exists()
    # most rows missing (> 50 %): error too
    fx.tone(root / "audio" / "1-100031-A-0.wav", 44_100)
    with pytest.raises(FileNotFoundError, match="10 of 11 rows have no audio file"):
        prepare_task("esc50", root, tmp_path / "o")
    gt = fx.make_cremad(tmp_path / "cremad_wrong")
    with pytest.raises(FileNotFoundError, match="AudioWAV"):
        prepare_task("cremad", gt / "AudioWAV", tmp_path / "o")
    with pytest.raises(ValueError, match="unknown downstream dataset 'esc-100'"):
        prepare_task("esc-100", root, tmp_path / "o")
    assert main(["prepare", "task", "gtzan", "--source", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
