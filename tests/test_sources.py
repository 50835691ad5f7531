"""Source adapters on tiny generated corpora in their published layouts (see fixtures_sources.py)."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import fixtures_sources as F  # noqa: E402

from audiolp.data.schema import SAMPLING_RATE, cut_captions, cut_domain, cut_labels, cut_source, validate_cut  # noqa: E402
from audiolp.data.sources import SOURCES, load_source, parse_youtube_clip  # noqa: E402


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    return F.make_all(tmp_path_factory.mktemp("corpora"))


@pytest.fixture(scope="module")
def loads(corpora):
    opts = F.options(corpora)
    return {name: load_source(name, root, **opts.get(name, {})) for name, root in corpora.items()}


def test_registry_lists_every_corpus():
    assert set(SOURCES) == set(F.MAKERS)
    with pytest.raises(KeyError, match="known sources: audiocaps, audiosetcaps, clotho"):
        load_source("audiocapz", "/nowhere")
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['audio_folder'\]; accepted: \['audio_dir'"):
        load_source("audiocaps", "/nowhere", audio_folder="x")


@pytest.mark.parametrize("name", list(F.MAKERS))
def test_exact_counts(loads, name):
    ld = loads[name]
    exp = F.EXPECTED[name]
    assert len(ld.cuts) == exp["cuts"]
    assert ld.missing_audio == exp["missing_audio"]
    assert len(ld.malformed) == exp["malformed"], ld.malformed
    assert ld.empty_captions == exp["empty_captions"]
    assert len(ld.eval_ids) == exp["eval_ids"]
    for m in ld.malformed:  # every problem names a file and a line/entry
        assert re.search(r"[^\s:]+\.(csv|json|jsonl|parquet|flac|wav):\d+", m), m
    for cut in ld.cuts:
        validate_cut(cut)
        assert cut.sampling_rate == SAMPLING_RATE
        assert cut_source(cut).split("/")[0] == name
    assert len({c.id for c in ld.cuts}) == len(ld.cuts)


@pytest.mark.parametrize("name, domain", [
    ("audiocaps", "sound"), ("clotho", "sound"), ("wavcaps", "sound"), ("musiccaps", "music"),
    ("audiosetcaps", "sound"), ("paraspeechcaps", "speech"), ("jamendomaxcaps", "music"),
])
def test_domain(loads, name, domain):
    assert {cut_domain(c) for c in loads[name].cuts} == {domain}


def test_audiocaps_groups_captions_and_keeps_split(loads):
    cuts = {c.id: c for c in loads["audiocaps"].cuts}
    assert set(cuts) == {"audiocaps/AAAAAAAAAAA_30", "audiocaps/BBBBBBBBBBB_0", "audiocaps/TTTTTTTTTTT_0"}
    test = cuts["audiocaps/TTTTTTTTTTT_0"]
    assert cut_captions(test) == ["a man speaks", "a man talks"]
    assert test.supervisions[0].custom["split"] == "test"
    assert loads["audiocaps"].eval_ids == {"yt:TTTTTTTTTTT"}
    # The Y-prefixed 8 kHz file of 2 s is found and resampled on load.
    b = cuts["audiocaps/BBBBBBBBBBB_0"]
    assert b.duration == pytest.approx(2.0)
    audio = b.load_audio()
    assert audio.shape == (1, 32000)
    assert any("train.csv:6" in m and "start_time" in m for m in loads["audiocaps"].malformed)


def test_audiocaps_file_patterns_are_configurable(corpora):
    ld = load_source("audiocaps", corpora["audiocaps"], file_patterns=("{youtube_id}",))
    assert {c.id for c in ld.cuts} == {"audiocaps/AAAAAAAAAAA_30", "audiocaps/TTTTTTTTTTT_0"}
    assert ld.missing_audio == 2  # the Y-prefixed file is not matched any more


def test_clotho_captions_and_quoting(loads):
    cuts = {c.id: c for c in loads["clotho"].cuts}
    water = cuts["clotho/development/water, flowing"]
    assert cut_captions(water) == ["water flows", "water runs", "a stream flows", "water flows"]
    assert loads["clotho"].eval_ids == {"clotho:eval clip"}
    assert any("clotho_captions_development.csv:6" in m for m in loads["clotho"].malformed)


def test_wavcaps_subsets_corrupt_audio_and_media_ids(loads, corpora):
    ld = loads["wavcaps"]
    assert sorted(cut_source(c) for c in ld.cuts) == [
        "wavcaps/audioset_sl", "wavcaps/bbc_sound_effects", "wavcaps/freesound", "wavcaps/soundbible",
    ]
    corrupt = [m for m in ld.malformed if "07066106.flac" in m]
    assert len(corrupt) == 1 and "unreadable audio" in corrupt[0] and "bbc_final.json:3" in corrupt[0]
    assert any("fsd_final.json:2" in m and "'id'" in m for m in ld.malformed)
    media = {c.supervisions[0].custom["media_id"] for c in ld.cuts if cut_source(c) == "wavcaps/audioset_sl"}
    assert media == {"yt:AAAAAAAAAAA"}
    # json_files/blacklist names YTTTTTTTTTTT and FreeSound 555: skipped here, not evaluation ids of the build
    assert ld.excluded == 2 and ld.eval_ids == set()
    assert "wavcaps/freesound/555" not in {c.id for c in ld.cuts}
    with pytest.raises(FileNotFoundError, match="blacklist 'nope.json' not found"):
        load_source("wavcaps", corpora["wavcaps"], blacklists=("nope.json",))


def test_musiccaps_labels_and_eval(loads):
    cuts = {c.id: c for c in loads["musiccaps"].cuts}
    assert cut_labels(cuts["musiccaps/MMMMMMMMMMM_30"]) == ["pop", "mellow piano"]
    assert cuts["musiccaps/NNNNNNNNNNN_0"].supervisions[0].custom["split"] == "eval"
    assert loads["musiccaps"].eval_ids == {"yt:NNNNNNNNNNN"}


def test_audiosetcaps_vggsound_test(loads, corpora):
    ld = loads["audiosetcaps"]
    assert ld.eval_ids == {"yt:VVVVVVVVVVV"}
    vgg = [c for c in ld.cuts if cut_source(c) == "audiosetcaps/vggsound"]
    assert [c.supervisions[0].custom.get("split") for c in vgg] == ["test"]
    assert vgg[0].supervisions[0].custom["media_start"] == 30.0
    y8m = [c for c in ld.cuts if cut_source(c) == "audiosetcaps/youtube8m"]
    custom = y8m[0].supervisions[0].custom
    assert (custom["media_id"], custom["media_start"], custom["media_end"]) == ("yt:NNNNNNNNNNN", 84.0, 94.0)
    with pytest.raises(ValueError, match="unknown subset"):
        load_source("audiosetcaps", corpora["audiosetcaps"], subsets=("AudioSet", "Nope"))


def test_paraspeechcaps_fields_and_splits(loads, corpora):
    cuts = {c.id: c for c in loads["paraspeechcaps"].cuts}
    vox = cuts["paraspeechcaps/voxceleb/id10001/abc/00001"]
    assert cut_captions(vox) == ["a man speaks slowly", "a deep male voice"]
    assert cut_labels(vox) == ["deep", "calm"]
    custom = vox.supervisions[0].custom
    assert (custom["speakerid"], custom["gender"], custom["speaking_rate"]) == ("id10001", "male", "slow")
    dev = load_source("paraspeechcaps", corpora["paraspeechcaps"], splits=("dev",), **F.options(corpora)["paraspeechcaps"])
    assert [c.id for c in dev.cuts] == ["paraspeechcaps/ears/p002/read"]


def test_jamendo_segments_and_metadata_labels(loads):
    cuts = {c.id: c for c in loads["jamendomaxcaps"].cuts}
    assert set(cuts) == {"jamendomaxcaps/1001", "jamendomaxcaps/1004_0", "jamendomaxcaps/1004_0.5"}
    assert cuts["jamendomaxcaps/1004_0"].duration == pytest.approx(0.5)
    second = cuts["jamendomaxcaps/1004_0.5"]
    assert (second.start, second.duration) == (pytest.approx(0.5), pytest.approx(0.5))
    assert second.load_audio().shape == (1, 8000)
    assert cuts["jamendomaxcaps/1001"].duration == pytest.approx(1.0)  # mp3, whole track
    assert cut_labels(cuts["jamendomaxcaps/1001"]) == ["rock", "guitar", "energetic"]


@pytest.mark.parametrize("name", list(F.MAKERS))
def test_missing_or_empty_root_is_a_clear_error(tmp_path, name):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "absent"))):
        load_source(name, tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="expected"):
        load_source(name, tmp_path / "empty")


def test_csv_without_required_column_names_the_file(tmp_path):
    (tmp_path / "train.csv").write_text("youtube_id,caption\nAAAAAAAAAAA,a dog\n")
    with pytest.raises(ValueError, match=r"train\.csv.*audiocap_id"):
        load_source("audiocaps", tmp_path)


@pytest.mark.parametrize("name, expected", [
    ("AAAAAAAAAAA", ("AAAAAAAAAAA", None, None)),
    ("Yb0RFKhbpFJA.wav", ("b0RFKhbpFJA", None, None)),
    ("---g-f_I2yQ_000001", ("---g-f_I2yQ", 1.0, None)),
    ("_7Xe9vD3Hpg_4_10", ("_7Xe9vD3Hpg", 4.0, 10.0)),
    ("Yabcdefghij_30", ("Yabcdefghij", 30.0, None)),  # an 11-char id that starts with Y
    ("bad id!!", None),
    ("short", None),
])
def test_parse_youtube_clip(name, expected):
    assert parse_youtube_clip(name) == expected


# --- parallel header reads and packed cuts (audiolp.data.sources.common) ---------------------------------
@pytest.mark.parametrize("kind", ["thread", "process"])
def test_parallel_header_reads_match_serial(corpora, loads, kind):
    from audiolp.data.sources.common import parallel_headers

    opts = F.options(corpora)
    with parallel_headers(3, kind=kind):
        par = {name: load_source(name, root, **opts.get(name, {})) for name, root in corpora.items()}
    for name, ref in loads.items():
        assert [c.to_dict() for c in par[name].cuts] == [c.to_dict() for c in ref.cuts], name
        assert par[name].malformed == ref.malformed, name
        assert par[name].summary() == ref.summary() and par[name].pending == []


@pytest.mark.parametrize("batch", [8192, 2])
def test_parallel_keeps_error_order_between_malformed_rows(tmp_path, monkeypatch, batch):
    """Unreadable-audio errors found by the pool land between the csv errors exactly where serial puts them,
    also when the queue is resolved in several batches while the csv is read."""
    import numpy as np
    import soundfile as sf

    from audiolp.data.sources import common

    monkeypatch.setattr(common, "PENDING_BATCH", batch)

    root = tmp_path / "clotho"
    (root / "development").mkdir(parents=True)
    sf.write(root / "development" / "good.wav", np.zeros(1600, dtype="float32"), 16000)
    for bad in ("bad1.wav", "bad2.wav"):
        (root / "development" / bad).write_bytes(b"not audio at all")
    caps = ",".join(f"cap {i}" for i in range(5))
    (root / "clotho_captions_development.csv").write_text(
        "file_name,caption_1,caption_2,caption_3,caption_4,caption_5\n"
        f"good.wav,{caps}\nbad1.wav,{caps}\nshort,row\nbad2.wav,{caps}\ngood.wav,{caps}\nbad1.wav,{caps}\n"
        "x,y\n", encoding="utf-8")
    serial = load_source("clotho", root, splits=("development",), num_workers=1)
    par = load_source("clotho", root, splits=("development",), num_workers=2)
    assert [m.split(":")[0].rsplit("/", 1)[-1][:8] for m in serial.malformed] == [
        "bad1.wav", "clotho_c", "bad2.wav", "bad1.wav", "clotho_c"]
    assert par.malformed == serial.malformed
    assert [c.to_dict() for c in par.cuts] == [c.to_dict() for c in serial.cuts] and len(par.cuts) == 2


def test_packed_cut_round_trips_exactly(loads):
    import json

    from audiolp.data.sources.common import PackedCut

    cuts = [c for ld in loads.values() for c in ld.cuts]
    assert len(cuts) > 20
    for cut in cuts:
        rec = PackedCut(cut)
        assert rec.id == cut.id and rec.captions == cut_captions(cut)
        assert json.dumps(rec.cut().to_dict()) == json.dumps(cut.to_dict())  # same values, same key order
        assert rec.__sizeof__() < 600  # the point of packing: well under the ~1.6 KB of a MonoCut tree
    rec = PackedCut(cuts[0])
    rec.captions = rec.captions + ["an extra caption"]
    rec.merged_from = ["other/id"]
    custom = rec.cut().supervisions[0].custom
    assert custom["caption"][-1] == "an extra caption" and custom["merged_from"] == ["other/id"]
    assert list(custom)[0] == "caption" and list(custom)[-1] == "merged_from"


def test_jamendo_tracks_unpacked_from_hf_parquet_shards(tmp_path):
    """The HF repo's data/train-*.parquet hold the tracks as an Audio column ({bytes, path}); they are written out
    once, read from there, and a rerun keeps what is already on disk."""
    import io

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import soundfile as sf

    root = F.make_jamendomaxcaps(tmp_path / "jamendo")
    for f in (root / "audio").rglob("*"):
        if f.is_file():
            f.unlink()  # the tracks exist only inside the parquet shards now

    def encoded(fmt: str, seconds: float) -> bytes:
        buf = io.BytesIO()
        sf.write(buf, 0.1 * np.sin(np.arange(int(16000 * seconds)) / 5.0).astype("float32"), 16000, format=fmt)
        return buf.getvalue()

    (root / "data").mkdir()
    audio = pa.array([{"bytes": encoded("MP3", 1.0), "path": "1001.mp3"},
                      {"bytes": None, "path": "1003.mp3"},  # a row without bytes: reported, not fatal
                      {"bytes": encoded("WAV", 1.0), "path": None}],  # no path: named by id + sniffed suffix
                     type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    shard = root / "data" / "train-00000-of-00001.parquet"
    pq.write_table(pa.table({"audio": audio, "id": ["1001", "1003", "1004"]}), shard)

    out_dir = tmp_path / "unpacked"
    ld = load_source("jamendomaxcaps", root, unpack_audio_to=out_dir)
    assert sorted(p.name for p in out_dir.iterdir()) == ["1001.mp3", "1004.wav"]
    assert {c.id for c in ld.cuts} == {"jamendomaxcaps/1001", "jamendomaxcaps/1004_0", "jamendomaxcaps/1004_0.5"}
    assert ld.missing_audio == 1  # 1003: its parquet row had no bytes
    assert any(re.search(r"train-00000-of-00001\.parquet:2: no audio bytes", m) for m in ld.malformed)
    # A rerun leaves the unpacked files alone.
    stamp = (out_dir / "1001.mp3").stat().st_mtime_ns
    from audiolp.data.sources.common import unpack_parquet_audio

    again = unpack_parquet_audio([shard], out_dir)
    assert (again.written, again.existing, len(again.problems)) == (0, 2, 1)
    assert (out_dir / "1001.mp3").stat().st_mtime_ns == stamp
    with pytest.raises(FileNotFoundError, match="no .parquet shards"):
        load_source("jamendomaxcaps", F.make_jamendomaxcaps(tmp_path / "plain"), unpack_audio_to=out_dir)


# --- clips inside whole videos, AudioSet file naming -------------------------------------------------------
@pytest.fixture(scope="module")
def full_videos(tmp_path_factory):
    return F.make_full_video_copies(tmp_path_factory.mktemp("full_videos"))


def _span(cut):
    """(cut start, duration, first sample) - the ramp fixture's sample value is its time in the file / 1000."""
    return round(cut.start, 3), round(cut.duration, 3), round(float(cut.load_audio()[0, 0]) * 1000, 2)


def test_musiccaps_clip_cut_out_of_whole_video(full_videos):
    ld = load_source("musiccaps", full_videos["musiccaps"])
    cuts = {c.id: c for c in ld.cuts}
    # a 45 s file under the bare id is the video: the 10 s caption gets its 30-40 s, not 45 s from 0
    assert _span(cuts["musiccaps/-0Gj8-vB1q4_30"]) == (30.0, 10.0, 30.0)
    # 10.5 s is the clip itself (within the 1 s slack): used from its start
    assert _span(cuts["musiccaps/k0Gj8-vB1q4_30"]) == (0.0, 10.5, 0.0)
    # AudioSet's Y<id>_30.000_40.000 name is found; it is the clip
    assert _span(cuts["musiccaps/a0Gj8-vB1q4_30"]) == (0.0, 10.0, 0.0)
    assert ld.cut_from_full_media == 1 and ld.summary()["cut_from_full_media"] == 1
    # 20 s file, clip at 100-110 s: neither the clip nor its video -> reported with file and line, not cut
    assert "musiccaps/z0Gj8-vB1q4_100" not in cuts
    assert len(ld.malformed) == 1 and re.search(r"musiccaps-public\.csv:4: audio .*z0Gj8-vB1q4\.wav is 20\.00 s", ld.malformed[0])
    assert "starts at 100 s" in ld.malformed[0]


def test_audiocaps_clip_cut_out_of_whole_video_and_audioset_names(full_videos):
    ld = load_source("audiocaps", full_videos["audiocaps"])
    cuts = {c.id: c for c in ld.cuts}
    assert ld.missing_audio == 0 and ld.malformed == []
    assert _span(cuts["audiocaps/--0w1YA1Hm4_25"]) == (25.0, 10.0, 25.0)  # 40 s video -> 25..35 s
    assert _span(cuts["audiocaps/-20w1YA1Hm4_25"]) == (25.0, 6.0, 25.0)  # video ends at 31 s
    assert _span(cuts["audiocaps/-30w1YA1Hm4_30"]) == (0.0, 10.0, 0.0)  # Y<id>_30.000_40.000.wav
    assert _span(cuts["audiocaps/-40w1YA1Hm4_30"]) == (0.0, 8.0, 0.0)  # Y<id>_30.000_38.000.wav (by video id)
    assert _span(cuts["audiocaps/-50w1YA1Hm4_0"]) == (0.0, 1.0, 0.0)  # bare id, 1 s: the clip itself
    assert ld.cut_from_full_media == 2
    # the media span stays the clip's, whatever file held it
    custom = cuts["audiocaps/--0w1YA1Hm4_25"].supervisions[0].custom
    assert (custom["media_start"], custom["media_end"]) == (25.0, 35.0)


@pytest.mark.parametrize("name", ["musiccaps", "audiocaps", "audiosetcaps"])
def test_whole_video_cuts_same_in_parallel(full_videos, name):
    serial = load_source(name, full_videos[name], num_workers=1)
    par = load_source(name, full_videos[name], num_workers=3)
    assert [c.to_dict() for c in par.cuts] == [c.to_dict() for c in serial.cuts]
    assert par.malformed == serial.malformed and par.summary() == serial.summary()
    assert serial.cut_from_full_media == {"musiccaps": 1, "audiocaps": 2, "audiosetcaps": 1}[name]


def test_audiocaps_patterns_can_use_float_start_and_end(full_videos):
    with pytest.warns(UserWarning, match="3 of 5 rows found no audio"):  # the other patterns are needed
        ld = load_source("audiocaps", full_videos["audiocaps"], file_patterns=("Y{youtube_id}_{start:.3f}_{end:.3f}",))
    # exact name for -30...; -40... still found by the video-id fallback (its segment ends at 38 s)
    assert sorted(c.id for c in ld.cuts) == ["audiocaps/-30w1YA1Hm4_30", "audiocaps/-40w1YA1Hm4_30"]


def test_audiosetcaps_whole_video_and_audioset_names(full_videos):
    ld = load_source("audiosetcaps", full_videos["audiosetcaps"], subsets=("AudioSet", "VGGSound"))
    cuts = {c.id: c for c in ld.cuts}
    assert ld.missing_audio == 0 and ld.malformed == []
    vgg = cuts["audiosetcaps/vggsound/-70w1YA1Hm4_000030"]
    assert _span(vgg) == (30.0, 10.0, 30.0)  # bare-id 45 s video -> 30..40 s
    aset = cuts["audiosetcaps/audioset/Y-60w1YA1Hm4"]
    assert _span(aset) == (0.0, 10.0, 0.0)
    custom = aset.supervisions[0].custom  # the id had no time: the AudioSet file name gives the span
    assert (custom["media_id"], custom["media_start"], custom["media_end"]) == ("yt:-60w1YA1Hm4", 20.0, 30.0)


def test_wavcaps_audioset_sl_found_under_audioset_name(full_videos):
    ld = load_source("wavcaps", full_videos["wavcaps"], subsets=("AudioSet_SL",), blacklists=())
    assert ld.missing_audio == 0 and len(ld.cuts) == 1 and ld.warnings == []
    custom = ld.cuts[0].supervisions[0].custom
    assert (custom["media_id"], custom["media_start"], custom["media_end"]) == ("yt:-80w1YA1Hm4", 10.0, 20.0)


# --- counts, real-world csv and file names ----------------------------------------------------------------
def test_audiocaps_counts_add_up_and_broken_lines_are_joined(tmp_path):
    ld = load_source("audiocaps", F.make_audiocaps_broken_lines(tmp_path / "ac"), splits=("train", "val"))
    caps = {c.id: cut_captions(c) for c in ld.cuts}
    assert caps["audiocaps/IAosP90cdsE_30"] == ["an engine chugging loudly with muffled speech in the background"]
    assert caps["audiocaps/NWZK4Mm3aNc_0"] == ["heavy wind followed by a loud bang", "a bang in the wind"]
    assert caps["audiocaps/abcdefghijk_30"] == ["a dog barks", "dog barking", "a dog"]
    s = ld.summary()
    assert s["repaired_line_breaks"] == 2
    assert len(ld.malformed) == 1 and "train.csv:7: 2 fields" in ld.malformed[0]  # the real bad row only
    # per clip: bbbbbbbbbbb has only empty captions; the 7 empty caption rows are counted apart
    assert (s["rows"], s["loaded"], s["missing_audio"], s["malformed"], s["empty_captions"]) == (5, 3, 0, 1, 1)
    assert s["empty_caption_rows"] == 7
    assert s["rows"] == s["loaded"] + s["missing_audio"] + s["malformed"] + s["empty_captions"]


@pytest.mark.parametrize("name", list(F.MAKERS))
def test_summary_rows_add_up(loads, name):
    s = loads[name].summary()
    assert s["rows"] == s["loaded"] + s["missing_audio"] + s["malformed"] + s["empty_captions"] + s["excluded"], s


def test_clotho_nfc_name_finds_nfd_file(tmp_path):
    ld = load_source("clotho", F.make_clotho_nfd(tmp_path / "clotho"), splits=("development",))
    assert (len(ld.cuts), ld.missing_audio) == (1, 0)
    assert ld.cuts[0].load_audio().shape == (1, 16000)


def test_wavcaps_without_blacklist_folder_warns(tmp_path):
    import shutil

    root = F.make_wavcaps(tmp_path / "wavcaps")
    shutil.rmtree(root / "json_files" / "blacklist")
    with pytest.warns(UserWarning, match=r"json_files/blacklist.*NOT excluded"):
        ld = load_source("wavcaps", root)
    assert ld.summary()["warnings"] == 1 and "blacklist_exclude_test_ac.json" in ld.warnings[0]
    assert ld.excluded == 0  # FreeSound 555 (a Clotho evaluation clip) is no longer left out
    assert "wavcaps/freesound/555" in {c.id for c in ld.cuts}
    ld = load_source("wavcaps", root, blacklists=())  # building without it on purpose: no warning
    assert ld.warnings == []
