"""MiniStew (built-in offline corpus) and MiniBench (held-out tasks), on the tiny profile built once per session."""
from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiolp.data.schema import (
    DOMAINS,
    SAMPLING_RATE,
    cut_captions,
    cut_domain,
    cut_labels,
    cut_source,
    load_manifest,
    validate_cut,
)
from audiolp.data.tasks import (
    TaskRegistryError,
    TaskSpec,
    load_task_registry,
    load_task_split,
    write_task_registry,
)
from conftest_ministew import tiny_ministew  # noqa: F401  (session fixture)

TASKS = {"voice_id", "language_id", "pitch_level", "instrument_family", "drum_instrument", "sound_event",
         "event_detection", "retrieval"}


def _all(root: Path):
    pre = list(load_manifest(root / "cuts.jsonl.gz"))
    reg = load_task_registry(root / "tasks.json")
    tasks = {n: {s: list(load_task_split(spec, s, root)) for s in spec.splits} for n, spec in reg.items()}
    return pre, reg, tasks


def _manifest_digest(root: Path) -> str:
    """Checksum of all manifests with the build folder's path taken out (paths are absolute)."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.jsonl.gz")):
        text = gzip.open(p, "rt").read().replace(str(root), "<ROOT>")
        h.update(str(p.relative_to(root)).encode() + text.encode())
    h.update((root / "tasks.json").read_bytes())
    return h.hexdigest()


def test_tiny_profile_sizes_domains_and_clip_format(tiny_ministew):
    pre, reg, tasks = _all(tiny_ministew)
    task_cuts = [c for t in tasks.values() for cs in t.values() for c in cs]
    ids = {c.id for c in pre} | {c.id for c in task_cuts}
    assert 300 <= len(ids) <= 600
    assert set(reg) == TASKS
    assert {cut_domain(c) for c in pre} == set(DOMAINS)
    for c in pre + task_cuts:
        validate_cut(c)
        assert 1.0 - 1e-6 <= c.duration <= 10.0 + 1e-6, (c.id, c.duration)
        assert cut_source(c).startswith("ministew/")
        assert 2 <= len(cut_captions(c)) <= 4
        custom = c.supervisions[0].custom
        assert custom["meta"] and custom["origins"] and len(custom["caption_styles"]) == len(cut_captions(c))
    # The audio on disk is what the manifest says: 16 kHz mono FLAC with the stated length, not silent.
    for c in pre[::23] + task_cuts[::41]:
        path = c.recording.sources[0].source
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.format) == (SAMPLING_RATE, 1, "FLAC")
        assert info.frames == c.recording.num_samples
        x = c.load_audio()
        assert x.shape == (1, c.recording.num_samples) and float(np.abs(x).max()) > 0.01


def test_pretraining_never_holds_task_clips_or_their_sources(tiny_ministew):
    pre, _, tasks = _all(tiny_ministew)
    task_cuts = [c for t in tasks.values() for cs in t.values() for c in cs]
    assert not ({c.id for c in pre} & {c.id for c in task_cuts})
    pre_origins = {o for c in pre for o in c.supervisions[0].custom["origins"]}
    task_origins = {o for c in task_cuts for o in c.supervisions[0].custom["origins"]}
    assert pre_origins and task_origins and not (pre_origins & task_origins)
    # Audio files are distinct too.
    assert not ({c.recording.sources[0].source for c in pre} & {c.recording.sources[0].source for c in task_cuts})


def test_task_splits_generalise_and_labels_are_consistent(tiny_ministew):
    _, reg, tasks = _all(tiny_ministew)
    for name, spec in reg.items():
        assert set(spec.splits) == {"train", "val", "test"}, name
        split_origins = {s: {o for c in cs for o in c.supervisions[0].custom["origins"]} for s, cs in tasks[name].items()}
        if spec.kind == "multiclass":
            for s, cs in tasks[name].items():
                labs = Counter(cut_labels(c)[0] for c in cs)
                assert set(labs) == set(spec.labels), (name, s, labs)
            # Held-out sources: test draws on texts / scores / kits / files never used in train.
            assert not (split_origins["train"] & split_origins["test"]), name
    # instrument_family: test is rendered through a soundfont never used in train.
    sfs = {s: {c.supervisions[0].custom["meta"]["soundfont"] for c in cs} for s, cs in tasks["instrument_family"].items()}
    assert not (sfs["train"] & sfs["test"])
    # drum_instrument: test drum samples are unseen in training (kits may recur: presets share samples).
    smp = {s: {k for c in cs for k in c.supervisions[0].custom["meta"]["samples"]}
           for s, cs in tasks["drum_instrument"].items()}
    assert smp["test"] and not (smp["train"] & smp["test"]) and not (smp["val"] & smp["test"])
    # event_detection: exact (label, onset, offset) events inside the clip, labels = the set of event labels.
    for c in tasks["event_detection"]["test"]:
        ev = c.supervisions[0].custom["events"]
        assert len(ev) >= 1 and sorted({e[0] for e in ev}) == sorted(cut_labels(c))
        for label, on, off in ev:
            assert label in reg["event_detection"].labels and 0 <= on < off <= c.duration + 1e-3
    # The event really starts at its onset: energy just after the onset exceeds the floor just before it.
    c = tasks["event_detection"]["test"][0]
    x = c.load_audio()[0]
    label, on, off = c.supervisions[0].custom["events"][0]
    i = int(on * SAMPLING_RATE)
    assert np.abs(x[i:i + 1600]).max() > 5 * (np.abs(x[max(0, i - 1600):i]).max() + 1e-6) or on < 0.1
    assert len(tasks["retrieval"]["test"]) >= 15
    assert {cut_domain(c) for c in tasks["retrieval"]["test"]} == set(DOMAINS)


def test_captions_follow_the_corpus_styles_and_vary(tiny_ministew):
    pre, _, _ = _all(tiny_ministew)
    styles = Counter()
    for c in pre:
        st = c.supervisions[0].custom["caption_styles"]
        assert len(set(st)) == len(st)  # distinct styles per clip
        styles.update((cut_domain(c), s) for s in st)
    assert styles[("speech", "paraspeechcaps")] and styles[("music", "musiccaps")]
    assert styles[("sound", "audiocaps")] and styles[("sound", "audiosetcaps")]
    caps = [x for c in pre for x in cut_captions(c)]
    assert len(set(caps)) / len(caps) > 0.8
    # Metadata drives captions: a speech clip's language name appears in its sentence caption.
    from audiolp.data.ministew.captions import LANG_NAMES

    for c in [c for c in pre if cut_source(c) == "ministew/espeak_tts"][:10]:
        lang = LANG_NAMES[c.supervisions[0].custom["meta"]["lang"]]
        assert lang in cut_captions(c)[0] and lang in cut_captions(c)[1]
    for c in [c for c in pre if cut_source(c) == "ministew/music21_render"][:10]:
        meta = c.supervisions[0].custom["meta"]
        assert meta["key"] in cut_captions(c)[2] or str(meta["tempo_bpm"]) in cut_captions(c)[2]


def test_rebuild_is_deterministic_and_resumes(tiny_ministew, tmp_path):
    from audiolp.data.ministew import build_ministew
    from audiolp.data.ministew.plan import PROFILES, Planner

    # Same seed -> same plan (and a different seed -> a different one).
    a = Planner(PROFILES["tiny"], 0).plan()
    assert json.dumps(a, sort_keys=True) == json.dumps(Planner(PROFILES["tiny"], 0).plan(), sort_keys=True)
    assert json.dumps(a, sort_keys=True) != json.dumps(Planner(PROFILES["tiny"], 1).plan(), sort_keys=True)

    # Interrupt a copy: drop two units (their audio and done markers) and the completion marker; rebuilding
    # regenerates exactly those clips, byte for byte, and the manifests come out identical.
    copy = tmp_path / "tiny"
    shutil.copytree(tiny_ministew, copy)
    units = sorted((copy / ".units").glob("*.json"))
    # Late units: in the first build their worker had made other clips before them, here they come first,
    # so generator state carried across clips (espeak-ng keeps some) would show up as different bytes.
    dropped = [u for u in units if u.name.startswith(("espeak-0003", "score-0002", "mixture-0000", "drum_hits-0001"))]
    assert len(dropped) == 4
    digests = {}
    for u in dropped:
        for r in json.loads(u.read_text())["records"]:
            f = copy / r["path"]
            digests[r["path"]] = hashlib.sha256(f.read_bytes()).hexdigest()
            f.unlink()
        u.unlink()
    (copy / "build_info.json").unlink()
    (copy / "cuts.jsonl.gz").unlink()
    built = build_ministew(copy, profile="tiny", seed=0, jobs=2, progress=False)
    assert built == copy.resolve()
    for rel, d in digests.items():
        assert hashlib.sha256((copy / rel).read_bytes()).hexdigest() == d, rel
    assert _manifest_digest(copy) == _manifest_digest(tiny_ministew)
    # The copy's manifests point at the copy's audio, not at the original folder.
    first = next(iter(load_manifest(copy / "cuts.jsonl.gz")))
    assert first.recording.sources[0].source.startswith(str(copy.resolve()))
    assert not list(copy.rglob("*.partial*"))


def test_a_bad_source_file_is_skipped_and_counted(tmp_path):
    from audiolp.data.ministew.build import _run_unit

    bad = tmp_path / "broken.ogg"
    bad.write_bytes(b"not audio at all")
    spec = {"id": "ms-bad-0", "gen": "file", "p": {"path": str(bad)}, "domain": "speech", "source": "ministew/x",
            "origins": ["x"], "assign": "pretrain", "labels": [], "meta": {"lang": "en"}}
    (tmp_path / ".units").mkdir()
    uid, ok, failed = _run_unit((str(tmp_path), "u-0", [spec], 0, "h"))
    assert (ok, failed) == (0, 1)
    rec = json.loads((tmp_path / ".units" / "u-0.json").read_text())
    assert str(bad) in rec["failed"][0]["error"]


def test_task_registry_roundtrip_and_errors(tmp_path):
    spec = TaskSpec("t", "multiclass", "accuracy", ["a", "b"], {"test": "tasks/t/test.jsonl.gz"}, "d", "sound")
    path = write_task_registry([spec], tmp_path / "tasks.json")
    assert load_task_registry(path)["t"] == spec
    with pytest.raises(TaskRegistryError, match="kind"):
        TaskSpec("t", "regression", "mse", ["a"], {"test": "x"})
    with pytest.raises(TaskRegistryError, match="labels"):
        TaskSpec("t", "multiclass", "accuracy", [], {"test": "x"})
    (tmp_path / "bad.json").write_text(json.dumps({"tasks": {"t": {"kind": "multiclass"}}}))
    with pytest.raises(TaskRegistryError, match="metric"):
        load_task_registry(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="manifest"):
        load_task_split(spec, "test", tmp_path)


def test_fbank_baseline_is_above_chance_and_below_ceiling(tiny_ministew, tmp_path):
    """The tasks are calibrated: the fbank reference (the evaluation layer's probe) is above chance on each and
    below the ceiling."""
    from audiolp.eval.embed import EmbeddingCache, FbankFrames
    from audiolp.eval.probe import probe_registry

    results = probe_registry(FbankFrames(), tiny_ministew / "tasks.json", EmbeddingCache(tmp_path, progress=False))
    assert len(results) == 6
    for r in results:
        assert r.chance + 0.1 <= r.test <= 0.97, r
    assert np.mean([r.test - r.chance for r in results]) > 0.25


def test_data_card_reports_sources_domains_and_licences(tiny_ministew):
    from audiolp.data.ministew.card import data_card

    card = data_card(tiny_ministew)
    for needle in ("ministew/espeak_tts", "ministew/music21_render", "ministew/minetest_sfx", "Distinct-2",
                   "LGPL-2.1+", "GPL-3.0-or-later", "| speech |", "| music |", "| sound |", "event_detection"):
        assert needle in card, needle
    assert card == (tiny_ministew / "CARD.md").read_text()
    assert "effect files identical to another effect file" in card  # the content-dedup bookkeeping is reported
    # A finished build refreshes a stale card (the card's code is not part of the build fingerprint).
    from audiolp.data.ministew import build_ministew

    (tiny_ministew / "CARD.md").write_text("stale")
    build_ministew(tiny_ministew, profile="tiny", seed=0, progress=False)
    assert (tiny_ministew / "CARD.md").read_text() == card


# ------------------------------------------------------------------------------- held-out content (issue fixes)
def _sha1(path) -> str:
    import os

    return hashlib.sha1(Path(os.path.realpath(path)).read_bytes()).hexdigest()


def _plan_contents(specs):
    """{assign: set of source-content digests} from clip specs, hashed here independently of the planner."""
    out: dict[str, set] = {}
    for sp in specs:
        p = sp["p"]
        files = ([p["path"]] if "path" in p else []) + [e["path"] for e in p.get("events", [])]
        if sp["gen"] in ("drum_hits", "drum_loop") and p.get("kind") == "h2":
            files += [p["file"]] if "file" in p else list(p["files"].values())
        out.setdefault(sp["assign"], set()).update(_sha1(f) for f in files)
    return out


def _assert_no_task_content_in_pretraining(specs):
    contents = _plan_contents(specs)
    pre = contents.pop("pretrain")
    assert pre and contents
    for assign, cs in contents.items():
        assert not (cs & pre), (assign, len(cs & pre))
    # Within a task, test content is never in train or val.
    for assign, cs in contents.items():
        kind, task, split = assign.split(":")
        if split == "test":
            for other in ("train", "val"):
                assert not (cs & contents.get(f"task:{task}:{other}", set())), (task, other)


def test_no_task_clip_shares_source_audio_with_pretraining(tiny_ministew):
    """Byte-identical files under other paths (copies, symlinks) must not carry held-out audio into pretraining."""
    from audiolp.data.ministew.plan import PROFILES, Planner

    specs = Planner(PROFILES["tiny"], 0).plan()
    built = {c.id for c in load_manifest(tiny_ministew / "cuts.jsonl.gz")}
    assert built <= {sp["id"] for sp in specs}  # the build is made from this plan
    _assert_no_task_content_in_pretraining(specs)
    # The planner keeps one item per content: no two effect specs' files differ in path but match in bytes
    # unless they are the same path.
    by_digest: dict[str, set] = {}
    for sp in specs:
        if sp["gen"] == "sfx":
            by_digest.setdefault(_sha1(sp["p"]["path"]), set()).add(sp["p"]["path"])
    assert by_digest and all(len(v) == 1 for v in by_digest.values())
    # Drum renders: a held-out soundfont key never renders the same audio as a pretraining loop's key.
    from audiolp.data.ministew import music

    def hit(sf, preset, note):
        return music.render_events(sf, [(0.05, 0.2, note, 100, 9)], {9: (128, preset, True)}, 0.6)

    pre_keys = {(sp["p"]["sf"], sp["p"]["preset"], n) for sp in specs if sp["gen"] == "drum_loop"
                and sp["p"]["kind"] == "sf" for n in sp["p"]["notes"].values()}
    test_keys = {(sp["p"]["sf"], sp["p"]["preset"], sp["p"]["note"]) for sp in specs
                 if sp["assign"] == "task:drum_instrument:test" and sp["p"]["kind"] == "sf"}
    assert pre_keys and test_keys
    renders = {k: hit(*k) for k in pre_keys | test_keys}
    for t in test_keys:
        for q in pre_keys:
            if t[0] == q[0] and t[2] == q[2]:
                assert not np.allclose(renders[t], renders[q], atol=1e-6), (t, q)


@pytest.mark.parametrize("profile", ["tiny", "full"])
def test_plan_holds_content_and_unseen_claims(profile, tiny_ministew):
    """The profile's plan (tiny: its packages are cached by the tiny build, so this runs on CI; full: only where its
    Debian packages are already cached, no download in tests)."""
    from audiolp.data.ministew import speech
    from audiolp.data.ministew.plan import PROFILES, Planner
    from audiolp.data.ministew.sources_debian import default_cache_dir

    if not all((default_cache_dir() / "unpacked" / p / ".unpacked").exists() for p in PROFILES[profile].debs):
        pytest.skip(f"{profile}-profile Debian packages are not cached")
    planner = Planner(PROFILES[profile], 0)
    specs = planner.plan()
    _assert_no_task_content_in_pretraining(specs)
    voices = {}
    for sp in specs:
        if sp["gen"] == "espeak":
            voices.setdefault(sp["assign"], set()).add(sp["p"]["variant"])
    held = voices["task:language_id:val"] | voices["task:language_id:test"]
    if "voices" in planner.tasks["language_id"]["description"]:  # tiny claims nothing about voices (see below)
        assert held and not (held & voices["pretrain"]) and not (held & voices["task:language_id:train"])
        assert all(v in planner.tasks["language_id"]["description"] for v in held)
    sfs = {sp["assign"]: set() for sp in specs}
    for sp in specs:
        if sp["gen"] == "score":
            sfs[sp["assign"]].add(sp["meta"]["soundfont"])
    assert sfs["task:instrument_family:test"] == {"MuseScoreGeneralLite"}
    assert not (sfs["task:instrument_family:test"] & (sfs["pretrain"] | sfs["task:instrument_family:train"]))
    samples = {}
    for sp in specs:
        if sp["gen"] in ("drum_hits", "drum_loop"):
            samples.setdefault(sp["assign"], set()).update(sp["meta"]["samples"])
    assert not (samples["task:drum_instrument:test"] & (samples["pretrain"] | samples["task:drum_instrument:train"]))
    pitch = {sp["p"]["variant"] for sp in specs if sp["assign"].startswith("task:pitch_level")}
    assert pitch and pitch <= set(speech.PITCH_VOICES) and "whisper" not in pitch
    # Hedgewars: a recording shared by several packs never carries a speaker_id label.
    if "hedgewars-data" in PROFILES[profile].debs:
        assert planner.skipped["hedgewars_voice_duplicates"] > 0


def test_unseen_claims_hold_against_pretraining_metadata(tiny_ministew):
    pre, reg, tasks = _all(tiny_ministew)
    meta = [c.supervisions[0].custom["meta"] for c in pre]
    # instrument_family: the test soundfont never renders scores in pretraining (or in train/val).
    pre_sf = {m["soundfont"] for m in meta if "soundfont" in m}
    test_sf = {c.supervisions[0].custom["meta"]["soundfont"] for c in tasks["instrument_family"]["test"]}
    train_sf = {c.supervisions[0].custom["meta"]["soundfont"] for s in ("train", "val")
                for c in tasks["instrument_family"][s]}
    assert pre_sf and test_sf and not (test_sf & pre_sf) and not (test_sf & train_sf)
    assert all(s in reg["instrument_family"].description.replace(" ", "") for s in ("MuseScoreGeneral",))
    # drum_instrument: no held-out drum sample (soundfont sample or sample file) is heard in pretraining.
    pre_smp = {k for m in meta for k in m.get("samples", [])}
    assert pre_smp
    for split, cs in tasks["drum_instrument"].items():
        task_smp = {k for c in cs for k in c.supervisions[0].custom["meta"]["samples"]}
        assert task_smp and not (task_smp & pre_smp), split
    # language_id: voices the description calls unseen never speak in pretraining or in its train split.
    pre_voices = {m["voice"].split("+")[1] for m in meta if m.get("voice")}
    tr_voices = {c.supervisions[0].custom["meta"]["voice"].split("+")[1] for c in tasks["language_id"]["train"]}
    for split in ("val", "test"):
        vs = {c.supervisions[0].custom["meta"]["voice"].split("+")[1] for c in tasks["language_id"][split]}
        if "voices" in reg["language_id"].description:
            assert not (vs & (pre_voices | tr_voices)), split
        else:  # tiny: a fixed pair of voices in every split; the description then claims nothing about voices
            assert vs == tr_voices


def test_pitch_level_labels_follow_measured_f0(tiny_ministew):
    from audiolp.data.ministew import speech

    _, reg, tasks = _all(tiny_ministew)
    cuts = [c for cs in tasks["pitch_level"].values() for c in cs]
    variants = {c.supervisions[0].custom["meta"]["voice"].split("+")[1] for c in cuts}
    assert "whisper" not in variants and variants <= set(speech.PITCH_VOICES)
    # Median F0 of the built clips (room noise included): the rule stated in the description holds.
    paths = [(c.recording.sources[0].source, cut_labels(c)[0]) for c in cuts[::3]]
    f0 = [speech.median_f0(sf.read(p)[0], SAMPLING_RATE) for p, _ in paths]
    ok = [speech.PITCH_F0_HZ[lab][0] <= f < speech.PITCH_F0_HZ[lab][1] for f, (_, lab) in zip(f0, paths)]
    assert len(ok) >= 15 and np.mean(ok) >= 0.9, list(zip(f0, [lab for _, lab in paths]))
    assert "no whisper" in reg["pitch_level"].description and "F0" in reg["pitch_level"].description
