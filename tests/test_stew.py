"""The CaptionStew builder over every fixture corpus: eval-overlap filtering, dedupe, statistics, files."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import fixtures_sources as F  # noqa: E402

from audiolp.data.schema import cut_captions, load_manifest  # noqa: E402
from audiolp.data.stew import _overlap, build_captionstew, manifest_statistics  # noqa: E402
from audiolp.data.text_stats import caption_statistics, stats_table, tokenize  # noqa: E402

# The 13 clips that survive, with their (merged) captions, written out by hand from fixtures_sources.py.
FINAL_CAPTIONS = {
    "audiocaps/AAAAAAAAAAA_30": ["a dog barks", "a dog barks loudly"],  # + WavCaps AudioSet_SL duplicate
    "audiocaps/BBBBBBBBBBB_0": ["rain falls", "rain falls on a roof"],  # + AudioSetCaps duplicate
    "clotho/development/birds sing": ["Birds sing.", "birds chirp", "birds sing loudly", "small birds sing",
                                      "birds chirp outside"],
    "clotho/development/water, flowing": ["water flows", "water runs", "a stream flows", "water flows"],
    "wavcaps/bbc_sound_effects/07066104": ["a door creaks"],
    "wavcaps/soundbible/1725": ["a bell rings"],
    "wavcaps/freesound/180913": ["a bird sings"],
    "musiccaps/MMMMMMMMMMM_30": ["a calm piano plays"],
    "audiosetcaps/audioset/SSSSSSSSSSS": ["a siren wails"],
    "paraspeechcaps/voxceleb/id10001/abc/00001": ["a man speaks slowly", "a deep male voice"],
    "paraspeechcaps/ears/p001/emo_happy": ["a woman speaks happily"],
    "jamendomaxcaps/1001": ["an upbeat rock song"],
    "jamendomaxcaps/1004_0": ["a soft piano melody"],
    "jamendomaxcaps/1004_0.5": ["a soft piano melody continues"],  # same track, later segment: kept
}
# Counted by hand: 24 captions, 77 word tokens, 43 distinct words, 53 bigrams of which 43 distinct.
N_CAPTIONS, N_TOKENS, VOCAB, N_BIGRAMS, DISTINCT_BIGRAMS = 24, 77, 43, 53, 43
SECONDS = 11 * 1.0 + 2.0 + 0.5 + 0.5  # BBBBBBBBBBB is 2 s, the Jamendo segments 0.5 s each, the rest 1 s


def _sources(corpora):
    opts = F.options(corpora)
    return [(name, root, opts.get(name, {})) for name, root in corpora.items()]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    base = tmp_path_factory.mktemp("stew")
    corpora = F.make_all(base / "corpora")
    report = build_captionstew(_sources(corpora), base / "out", seed=0)
    return corpora, report


def test_kept_clips_and_merged_captions(built):
    _, report = built
    cuts = {c.id: c for c in load_manifest(report.manifest)}
    assert report.num_cuts == 14
    assert {k: cut_captions(v) for k, v in cuts.items()} == FINAL_CAPTIONS
    custom = cuts["audiocaps/AAAAAAAAAAA_30"].supervisions[0].custom
    assert custom["merged_from"] == ["wavcaps/audioset_sl/YAAAAAAAAAAA"]
    assert custom["caption_sources"] == ["audiocaps", "wavcaps/audioset_sl"]
    assert cuts["audiocaps/BBBBBBBBBBB_0"].supervisions[0].custom["caption_sources"] == [
        "audiocaps", "audiosetcaps/audioset"]
    # clips that merged nothing carry no caption_sources: the schema of unmerged clips is unchanged
    assert [k for k, c in cuts.items() if "caption_sources" in c.supervisions[0].custom] == sorted(
        ["audiocaps/AAAAAAAAAAA_30", "audiocaps/BBBBBBBBBBB_0"], key=list(cuts).index)


def test_eval_overlap_is_dropped_across_corpora(built):
    _, report = built
    ids = {c.id for c in load_manifest(report.manifest)}
    # AudioCaps test itself and the WavCaps AudioSet_SL clip of the same YouTube video
    assert "audiocaps/TTTTTTTTTTT_0" not in ids
    assert "wavcaps/audioset_sl/YTTTTTTTTTTT" not in ids
    assert "musiccaps/NNNNNNNNNNN_0" not in ids  # MusicCaps is_audioset_eval
    assert "audiosetcaps/vggsound/VVVVVVVVVVV_000030" not in ids  # VGGSound test
    assert "clotho/evaluation/eval clip" not in ids
    assert "wavcaps/freesound/555" not in ids  # WavCaps' own blacklist (skipped by its adapter)
    inputs = report.inputs
    assert {k: v["dropped_eval_overlap"] for k, v in inputs.items()} == {
        "audiocaps": 1, "clotho": 1, "wavcaps": 0, "musiccaps": 1, "audiosetcaps": 2, "paraspeechcaps": 0,
        "jamendomaxcaps": 0,
    }
    assert {k: v["duplicates_merged"] for k, v in inputs.items() if v["duplicates_merged"]} == {
        "wavcaps": 1, "audiosetcaps": 1,
    }
    assert sum(v["kept"] for v in inputs.values()) == 14
    for name, exp in F.EXPECTED.items():
        assert inputs[name]["missing_audio"] == exp["missing_audio"]
        assert inputs[name]["malformed"] == exp["malformed"]
        assert inputs[name]["empty_captions"] == exp["empty_captions"]


def test_statistics_exact(built):
    _, report = built
    overall = report.stats["overall"]
    assert overall["clips"] == 14
    assert overall["captions"] == N_CAPTIONS
    assert overall["tokens"] == N_TOKENS
    assert overall["vocab_size"] == VOCAB
    assert overall["distinct_1"] == pytest.approx(VOCAB / N_TOKENS)
    assert overall["distinct_2"] == pytest.approx(DISTINCT_BIGRAMS / N_BIGRAMS)
    assert overall["hours"] == pytest.approx(SECONDS / 3600)
    assert overall["domains"] == {"music": 4, "sound": 8, "speech": 2}
    src = report.stats["sources"]
    # Captions count under the corpus that wrote them (custom['caption_sources']), clips under the kept clip:
    # AudioCaps keeps its 2 clips but only its own 2 captions ("a dog barks", "rain falls"); the merged
    # "a dog barks loudly" counts for WavCaps AudioSet_SL (which keeps no clip) and "rain falls on a roof" for
    # AudioSetCaps AudioSet (with its own "a siren wails").
    assert (src["audiocaps"]["clips"], src["audiocaps"]["captions"], src["audiocaps"]["vocab_size"]) == (2, 2, 5)
    assert src["audiocaps"]["tokens"] == 5
    sl = src["wavcaps/audioset_sl"]
    assert (sl["clips"], sl["hours"], sl["captions"], sl["tokens"], sl["vocab_size"]) == (0, 0.0, 1, 4, 4)
    assert sl["captions_per_clip"] == 0.0 and sl["distinct_2"] == pytest.approx(3 / 3)
    asc = src["audiosetcaps/audioset"]
    assert (asc["clips"], asc["captions"], asc["tokens"], asc["vocab_size"]) == (1, 2, 8, 7)  # a siren wails rain falls on roof
    assert asc["distinct_1"] == pytest.approx(7 / 8) and asc["distinct_2"] == pytest.approx(6 / 6)
    assert sum(s["captions"] for s in src.values()) == N_CAPTIONS
    assert sum(s["tokens"] for s in src.values()) == N_TOKENS
    assert (src["clotho"]["clips"], src["clotho"]["captions"], src["clotho"]["vocab_size"]) == (2, 9, 11)  # birds sing chirp loudly small outside water flows runs a stream
    assert src["audiocaps"]["hours"] == pytest.approx(3.0 / 3600)
    assert sum(s["clips"] for s in src.values()) == 14


def test_files_written_and_reloadable(built):
    _, report = built
    out = report.out_dir
    assert sorted(p.name for p in out.iterdir()) == ["cuts.jsonl.gz", "malformed.txt", "missing_audio.txt",
                                                     "stats.json"]
    missing = (out / "missing_audio.txt").read_text().splitlines()
    assert len(missing) == sum(e["missing_audio"] for e in F.EXPECTED.values())
    assert any(m.startswith("[audiocaps] ") and "DDDDDDDDDDD" in m and "expected e.g. /" in m for m in missing)
    on_disk = json.loads((out / "stats.json").read_text())
    assert on_disk["overall"] == report.stats["overall"]  # JSON round-trips floats exactly
    assert on_disk["inputs"] == report.inputs
    malformed = (out / "malformed.txt").read_text().splitlines()
    assert len(malformed) == sum(e["malformed"] for e in F.EXPECTED.values())
    # `audiolp stats DIR` path: statistics recomputed from the manifest alone agree with the build's.
    again = manifest_statistics(out)
    assert {k: v for k, v in again["overall"].items() if k != "hours"} == {
        k: v for k, v in report.stats["overall"].items() if k != "hours"}
    assert again["overall"]["hours"] == pytest.approx(report.stats["overall"]["hours"])
    table = stats_table(again)
    assert "TOTAL" in table and "audiocaps" in table and "dropped eval overlap" in table
    assert table.splitlines()[0].split()[:3] == ["source", "clips", "hours"]


def test_seed_changes_order_not_content(built, tmp_path):
    corpora, report = built
    other = build_captionstew(_sources(corpora), tmp_path / "s1", seed=1)
    a = [c.id for c in load_manifest(report.manifest)]
    b = [c.id for c in load_manifest(other.manifest)]
    assert sorted(a) == sorted(b) and a != b


def test_exclude_ids_by_media_id_and_stem(built, tmp_path):
    corpora, _ = built
    ids_file = tmp_path / "exclude.txt"
    ids_file.write_text("# user list\nYSSSSSSSSSSS.wav\n1001\n")
    report = build_captionstew(_sources(corpora), tmp_path / "ex", exclude_ids=ids_file)
    assert report.num_cuts == 12
    assert report.inputs["audiosetcaps"]["dropped_excluded"] == 1
    assert report.inputs["jamendomaxcaps"]["dropped_excluded"] == 1
    assert report.stats["build"]["exclude_ids_unmatched"] == 0
    # A list written for another tool ("id  # comment" lines) would exclude nothing: that is reported, not silent.
    ids_file.write_text("YSSSSSSSSSSS.wav  # the siren clip\n1001\n")
    with pytest.warns(UserWarning, match="1 of 2 exclude ids match no clip"):
        report = build_captionstew(_sources(corpora), tmp_path / "ex2", exclude_ids=ids_file)
    assert report.stats["build"]["exclude_ids_unmatched"] == 1 and report.num_cuts == 13
    assert "exclude_ids" in report.stats["build"]["warnings"]


def test_bad_source_writes_nothing(built, tmp_path):
    corpora, _ = built
    with pytest.raises(FileNotFoundError, match="musiccaps-public.csv"):
        build_captionstew({"audiocaps": corpora["audiocaps"], "musiccaps": tmp_path / "nope"}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_shar_export(built, tmp_path):
    corpora, _ = built
    sources = {"wavcaps": corpora["wavcaps"], "jamendomaxcaps": corpora["jamendomaxcaps"]}
    report = build_captionstew(sources, tmp_path / "sh", shar=True)
    shar = list(load_manifest(report.shar_dir))
    # no AudioCaps here: nothing merged; WavCaps' adapter still skips its blacklisted YTTTTTTTTTTT and 555
    assert len(shar) == report.num_cuts == 7
    assert {c.id for c in shar} == {c.id for c in load_manifest(report.manifest)}


def test_overlap_rule():
    assert _overlap((0.0, 10.0), (5.0, 15.0))
    assert not _overlap((0.0, 10.0), (10.0, 20.0))
    assert _overlap((None, None), (30.0, 40.0))  # unknown position: same clip


def test_tokenizer_and_small_statistics():
    assert tokenize("A dog's bark, then RAIN-fall!") == ["a", "dog's", "bark", "then", "rain", "fall"]
    from lhotse import Recording
    from lhotse.audio import AudioSource
    from audiolp.data.schema import make_caption_cut

    rec = Recording("r", [AudioSource("file", [0], "/dev/null")], 16000, 16000, 1.0)
    cut = make_caption_cut("c", rec, ["the cat the cat", "a cat"], source="s", domain="sound")
    st = caption_statistics([cut])["overall"]
    # tokens: the cat the cat | a cat -> 6 tokens, vocab {the, cat, a}; bigrams: the-cat, cat-the, the-cat,
    # a-cat -> 4, distinct 3
    assert (st["tokens"], st["vocab_size"]) == (6, 3)
    assert st["distinct_1"] == pytest.approx(3 / 6)
    assert st["distinct_2"] == pytest.approx(3 / 4)


def test_namespaced_exclude_ids_match_exactly_and_dict_options(built, tmp_path):
    corpora, _ = built
    psc = F.options(corpora)["paraspeechcaps"]
    sources = {
        "jamendomaxcaps": corpora["jamendomaxcaps"],
        "paraspeechcaps": {"root": corpora["paraspeechcaps"], **psc},
    }
    # "jamendo:1004" is a full media id (both segments of track 1004); "wavcaps/freesound:1001" must not match Jamendo track 1001.
    report = build_captionstew(sources, tmp_path / "ns", exclude_ids=["jamendo:1004", "wavcaps/freesound:1001"])
    assert report.inputs["jamendomaxcaps"]["dropped_excluded"] == 2
    assert {c.id for c in load_manifest(report.manifest)} == {
        "jamendomaxcaps/1001", "paraspeechcaps/voxceleb/id10001/abc/00001", "paraspeechcaps/ears/p001/emo_happy",
    }
    assert report.stats["build"]["sources"]["paraspeechcaps"]["adapter"] == "paraspeechcaps"


def test_parallel_build_identical_to_serial(built, tmp_path):
    """num_workers changes nothing: manifest, statistics and malformed list are byte-identical."""
    import gzip

    corpora, report = built  # default num_workers (a thread pool)
    for n in (1, 3):
        other = build_captionstew(_sources(corpora), tmp_path / f"w{n}", seed=0, num_workers=n)
        assert gzip.decompress(other.manifest.read_bytes()) == gzip.decompress(report.manifest.read_bytes())
        assert other.stats == report.stats
        for name in ("stats.json", "malformed.txt"):
            assert (other.out_dir / name).read_text() == (report.out_dir / name).read_text()
    assert not list(report.out_dir.glob("*.partial*"))  # the temp manifest was moved into place


def test_packed_manifest_equals_the_adapters_cuts(built):
    """The stew keeps cuts packed until writing; every written cut is the adapter's cut, field for field and
    in key order, with only the merged captions (and merged_from) changed."""
    from audiolp.data.sources import load_source

    corpora, report = built
    opts = F.options(corpora)
    plain = {c.id: c.to_dict() for name, root in corpora.items()
             for c in load_source(name, root, **opts.get(name, {})).cuts}
    written = list(load_manifest(report.manifest))
    assert len(written) == 14
    for cut in written:
        d, ref = cut.to_dict(), plain[cut.id]
        custom, rc = d["supervisions"][0]["custom"], ref["supervisions"][0]["custom"]
        assert custom["caption"] == FINAL_CAPTIONS[cut.id]
        rc["caption"] = custom["caption"]
        for key in ("merged_from", "caption_sources"):
            if key in custom:
                rc[key] = custom[key]
        assert json.dumps(d) == json.dumps(ref)


def test_read_id_list_keeps_commas_and_hashes_in_text_files(tmp_path):
    from audiolp.data.stew import read_id_list

    txt = tmp_path / "exclude.txt"
    txt.write_text("# clips to leave out\nRain, heavy.wav\nDoor #2.wav\n\n  # indented comment\nplain\n", encoding="utf-8")
    assert read_id_list(txt) == ["Rain, heavy.wav", "Door #2.wav", "plain"]
    csv_file = tmp_path / "exclude.csv"  # a csv: first column, quoting honoured
    csv_file.write_text('# comment\n"Rain, heavy.wav",because\nDoor #2.wav,x\n', encoding="utf-8")
    assert read_id_list(csv_file) == ["Rain, heavy.wav", "Door #2.wav"]
    assert read_id_list(["a,b"]) == ["a,b"]


def test_exclude_file_with_comma_in_name_drops_only_that_clip(tmp_path):
    import numpy as np
    import soundfile as sf

    root = tmp_path / "clotho"
    (root / "development").mkdir(parents=True)
    rows = []
    for name in ["Rain.wav", "Rain, heavy.wav", "Door #2.wav"]:
        rows.append([name] + [f"sound of {name}"] * 5)
        sf.write(root / "development" / name, np.full(1600, 0.01, np.float32), 16000)
    F._csv(root / "clotho_captions_development.csv", ["file_name"] + [f"caption_{i}" for i in range(1, 6)], rows)
    ex = tmp_path / "exclude.txt"
    ex.write_text("Rain, heavy.wav\nDoor #2.wav\n", encoding="utf-8")
    report = build_captionstew({"clotho": root}, tmp_path / "out", exclude_ids=ex, num_workers=1)
    assert [c.id for c in load_manifest(report.manifest)] == ["clotho/development/Rain"]
    assert report.inputs["clotho"]["dropped_excluded"] == 2


def test_merged_captions_counted_under_their_own_source(tmp_path):
    """AudioCaps + WavCaps: WavCaps AudioSet_SL's only surviving clip merges into AudioCaps; its caption
    still counts for wavcaps/audioset_sl, which therefore stays in the per-source statistics."""
    roots = {"audiocaps": F.make_audiocaps(tmp_path / "ac"), "wavcaps": F.make_wavcaps(tmp_path / "wc")}
    report = build_captionstew(roots, tmp_path / "out", num_workers=1)
    src = report.stats["sources"]
    assert {k: (v["clips"], v["captions"]) for k, v in src.items()} == {
        "audiocaps": (2, 2), "wavcaps/audioset_sl": (0, 1), "wavcaps/bbc_sound_effects": (1, 1),
        "wavcaps/freesound": (1, 1), "wavcaps/soundbible": (1, 1)}
    assert src["wavcaps/audioset_sl"]["vocab_size"] == 4  # a dog barks loudly
    assert src["audiocaps"]["vocab_size"] == 5  # a dog barks rain falls
    # recomputed from the manifest alone (`audiolp stats DIR`): the same attribution
    again = manifest_statistics(report.out_dir)
    assert {k: (v["clips"], v["captions"], v["vocab_size"], v["distinct_2"]) for k, v in again["sources"].items()} == {
        k: (v["clips"], v["captions"], v["vocab_size"], v["distinct_2"]) for k, v in src.items()}
    assert "wavcaps/audioset_sl" in stats_table(again)


def test_caption_sources_from_a_second_merge_and_bad_values(tmp_path):
    from lhotse import Recording
    from lhotse.audio import AudioSource

    from audiolp.data.schema import make_caption_cut
    from audiolp.data.sources.common import PackedCut
    from audiolp.data.stew import merge_duplicate

    rec = Recording("r", [AudioSource("file", [0], "/dev/null")], 16000, 16000, 1.0)
    keep = PackedCut(make_caption_cut("k", rec, ["one two"], source="a", domain="sound"))
    for src, caps in (("b", ["three four", "one two"]), ("c", ["five"])):  # "one two" repeats: skipped
        merge_duplicate(keep, PackedCut(make_caption_cut(f"d{src}", rec, caps, source=src, domain="sound")))
    cut = keep.cut()
    custom = cut.supervisions[0].custom
    assert custom["caption"] == ["one two", "three four", "five"]
    assert custom["caption_sources"] == ["a", "b", "c"] and custom["merged_from"] == ["db", "dc"]
    st = caption_statistics([cut])["sources"]
    assert {k: (v["clips"], v["captions"], v["tokens"]) for k, v in st.items()} == {
        "a": (1, 1, 2), "b": (0, 1, 2), "c": (0, 1, 1)}
    # a caption_sources list that does not match the captions (hand-edited manifest) is ignored
    cut.supervisions[0].custom["caption_sources"] = ["a"]
    assert list(caption_statistics([cut])["sources"]) == ["a"]


def test_wavcaps_without_blacklist_is_reported_in_the_build(tmp_path):
    import shutil

    root = F.make_wavcaps(tmp_path / "wc")
    shutil.rmtree(root / "json_files" / "blacklist")
    with pytest.warns(UserWarning, match="blacklist"):
        report = build_captionstew({"wavcaps": root}, tmp_path / "out", num_workers=1)
    assert report.inputs["wavcaps"]["warnings"] == 1
    assert "json_files/blacklist" in report.stats["build"]["warnings"]["wavcaps"][0]
    ids = {c.id for c in load_manifest(report.manifest)}
    assert "wavcaps/freesound/555" in ids  # what the warning is about: the Clotho evaluation copy stays
    assert "WARNING [wavcaps] wavcaps: default blacklist" in stats_table(manifest_statistics(report.out_dir))
