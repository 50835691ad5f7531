"""Plan a MiniStew build: which clips to make, from what, and where each goes (pretraining or a task split).

The plan is a list of JSON-serialisable clip specs, computed in the parent process from file inventories only
(no audio decoding), so it is cheap and deterministic. Task clips are drawn from held-out pools of underlying
sources (text items, scores, drum samples, voice packs, effect files): their ``origins`` never meet pretraining's,
and neither does their audio content: real files are grouped by content hash (packages ship one sound under several
paths) and drum sounds by the soundfont samples / sample files they play, before anything is partitioned.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from audiolp.data.ministew import music, sound, speech
from audiolp.data.ministew.sources_debian import DebPackage, fetch_deb

SPLITS = ("train", "val", "test")
SFX_SOURCE_NAMES = {"sound-theme-freedesktop": "freedesktop", "sound-icons": "soundicons", "minetest-data": "minetest",
                    "tuxpaint-data": "tuxpaint", "wesnoth-1.16-data": "wesnoth", "hedgewars-data": "hedgewars",
                    "tuxpaint-stamps-default": "tuxpaint_stamps"}


@dataclass(frozen=True)
class ProfileConfig:
    """Sizes and sources of one MiniStew profile. Counts are clips unless named otherwise."""

    name: str
    debs: tuple[str, ...]
    espeak_langs: tuple[str, ...]
    n_espeak: int
    n_tuxpaint: int
    n_klettres: int
    score_folders: tuple[str, ...]
    n_scores: int
    n_drum_loops: int
    sfx_aug_per_file: int
    n_mixtures: int
    voice_variants: tuple[str, ...]  # voice_id classes
    lid_langs: tuple[str, ...]  # language_id classes
    families: tuple[str, ...]  # instrument_family classes
    n_sound_classes: int  # sound_event / event_detection: the most frequent held-out categories
    per_class: dict = field(default_factory=lambda: {"train": 6, "val": 2, "test": 4})
    drum_per_class: dict = field(default_factory=lambda: {"train": 5, "val": 2, "test": 4})
    n_sed: dict = field(default_factory=lambda: {"train": 18, "val": 6, "test": 12})
    n_retrieval: dict = field(default_factory=lambda: {"train": 12, "val": 6, "test": 24})
    hedgewars_task_packs: tuple[str, ...] = ()
    task_share: float = 0.45  # fraction of each held-out-able pool reserved for tasks
    max_scores: dict | None = None  # cap on distinct scores per pool (tiny: few parses, each reused)
    speech_per_class: dict | None = None  # per-class split sizes of the speech tasks (default: per_class)
    max_sfx_pretrain: int | None = None  # cap on pretraining effect files (tiny)
    # Voices of language_id (and pitch_level, within speech.PITCH_VOICES). None: all variants outside voice_id, with
    # language_id's val/test voices unseen in its train split and in pretraining (full). A short tuple: those
    # voices in every split (tiny: learnable from ~8 clips/class).
    style_variants: tuple[str, ...] | None = None
    pitch_langs: tuple[str, ...] | None = None  # languages of pitch_level (default: lid_langs)
    sound_classes: tuple[str, ...] | None = None  # sound_event classes (default: the n_sound_classes most frequent)


TINY_DEBS = ("iso-codes", "sound-theme-freedesktop", "sound-icons", "minetest-data", "tuxpaint-data",
             "musescore-general-soundfont-small")
FULL_DEBS = TINY_DEBS + ("tuxpaint-stamps-default", "klettres-data", "hedgewars-data", "wesnoth-1.16-data",
                         "hydrogen-drumkits", "fluid-soundfont-gm")

PROFILES = {
    "tiny": ProfileConfig(
        name="tiny", debs=TINY_DEBS, espeak_langs=("en", "fr", "de", "es", "it", "ru"), n_espeak=30, n_tuxpaint=0,
        n_klettres=0, score_folders=("bach",), n_scores=25, n_drum_loops=6, sfx_aug_per_file=0, n_mixtures=10,
        voice_variants=("m1", "m3", "f1", "f4"), lid_langs=("en", "fr", "ru", "el"),
        families=("piano", "organ", "strings", "brass"), n_sound_classes=4,
        per_class={"train": 6, "val": 2, "test": 6}, drum_per_class={"train": 5, "val": 2, "test": 5},
        n_sed={"train": 15, "val": 5, "test": 10}, n_retrieval={"train": 8, "val": 4, "test": 18},
        max_scores={"pretrain": 12, "train": 10, "val": 4, "test": 6},
        speech_per_class={"train": 8, "val": 2, "test": 10}, max_sfx_pretrain=45, style_variants=("m1", "m3"),
        pitch_langs=("en",), task_share=0.8, sound_classes=("digging", "door", "footsteps", "water"),
    ),
    "full": ProfileConfig(
        name="full", debs=FULL_DEBS,
        espeak_langs=tuple(speech.ESPEAK_LANGS), n_espeak=1200, n_tuxpaint=2600, n_klettres=700,
        # Multi-tune opus files (essenFolksong, oneills1850, airdsAirs) and the long Beethoven quartets parse
        # for 10-20 s each; they are left out to keep the build near 30 min on 2 cores.
        score_folders=("bach", "palestrina", "monteverdi", "trecento", "josquin", "mozart", "haydn", "ryansMammoth"),
        n_scores=2800, n_drum_loops=700, sfx_aug_per_file=2, n_mixtures=1300,
        voice_variants=("m1", "m3", "m5", "m7", "f1", "f2", "f3", "f4"),
        lid_langs=("en", "fr", "de", "es", "it", "ru", "pl", "el"),
        families=tuple(music.GM_FAMILIES), n_sound_classes=8,
        per_class={"train": 40, "val": 10, "test": 20}, drum_per_class={"train": 40, "val": 10, "test": 20},
        n_sed={"train": 300, "val": 60, "test": 150}, n_retrieval={"train": 150, "val": 60, "test": 300},
        hedgewars_task_packs=("Pirate", "Robot", "Singer", "Mobster", "Russian", "British", "HillBilly", "Surfer"),
    ),
}


def stable_hash(*parts) -> int:
    return int.from_bytes(hashlib.sha1("\x1f".join(map(str, parts)).encode()).digest()[:8], "little")


def partition(keys, fractions: dict[str, float], seed: int, salt: str) -> dict[str, list]:
    """Deterministically split ``keys`` into named pools of the given fractions (order-independent)."""
    keys = sorted(set(keys), key=lambda k: stable_hash(seed, salt, k))
    out, i = {}, 0
    names = list(fractions)
    for j, name in enumerate(names):
        n = len(keys) - i if j == len(names) - 1 else int(round(fractions[name] * len(keys)))
        out[name] = sorted(keys[i:i + n])
        i += n
    return out


@lru_cache(maxsize=None)
def _digest(real_path: str) -> str:
    h = hashlib.sha1()
    with open(real_path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def content_digest(path) -> str:
    """SHA-1 of a file's bytes after resolving symlinks: Debian packages ship one sound under several paths
    (copies and links), so held-out pools are formed over contents, not paths."""
    return _digest(os.path.realpath(path))


def group_by_content(items: list[dict], key: str = "path") -> dict[str, list[dict]]:
    """{content digest: items with that content}, each list in the order of ``items``."""
    groups: dict[str, list[dict]] = {}
    for it in items:
        groups.setdefault(content_digest(it[key]), []).append(it)
    return groups


def spec_files(spec: dict) -> list[str]:
    """The real source files whose audio a clip spec uses (soundfont renders have none: see drum ``samples``)."""
    p = spec["p"]
    if spec["gen"] in ("file", "sfx"):
        return [p["path"]]
    if spec["gen"] == "mixture":
        return [e["path"] for e in p["events"]] + ([p["background"]] if p.get("background") else [])
    if spec["gen"] in ("drum_hits", "drum_loop") and p.get("kind") == "h2":
        return [p["file"]] if "file" in p else list(p["files"].values())
    return []


def task_fractions(share: float) -> dict[str, float]:
    return {"pretrain": 1 - share, "train": share * 0.55, "val": share * 0.15, "test": share * 0.30}


class Planner:
    def __init__(self, cfg: ProfileConfig, seed: int, cache_dir=None):
        self.cfg, self.seed = cfg, seed
        self.rng = np.random.default_rng([seed, 7])
        self.debs: dict[str, DebPackage] = {p: fetch_deb(p, cache_dir) for p in cfg.debs}
        self.specs: list[dict] = []
        self.tasks: dict[str, dict] = {}  # name -> {kind, metric, labels, description, domain}
        self.skipped: dict[str, int] = {}

    # ------------------------------------------------------------------------------------------- helpers
    def add(self, gen, p, domain, source, origins, assign, labels=(), meta=None):
        idx = len(self.specs)
        short = source.split("/")[-1]
        cid = f"ms-{short}-{idx:05d}-{stable_hash(self.seed, idx, short, assign) % 16 ** 6:06x}"
        self.specs.append({"id": cid, "gen": gen, "p": p, "domain": domain, "source": source,
                           "origins": sorted(set(origins)), "assign": assign, "labels": list(dict.fromkeys(labels)),
                           "meta": meta or {}})

    def task(self, name, kind, metric, labels, domain, description):
        self.tasks[name] = {"kind": kind, "metric": metric, "labels": list(labels), "domain": domain,
                            "description": description}

    def pick(self, seq):
        return seq[int(self.rng.integers(len(seq)))]

    def plan(self) -> list[dict]:
        self.plan_speech()
        self.plan_music()
        self.plan_sound()
        self.enforce_content_holdout()
        return self.specs

    def enforce_content_holdout(self):
        """Last guard after the per-source grouping: no task clip's source content (file bytes, or soundfont
        samples for drums) may feed pretraining, nor two splits of one task. Pretraining clips that would
        share content with a task are dropped and counted; a split clash inside a task is a planner bug."""
        def contents(spec):
            out = {"file:" + content_digest(f) for f in spec_files(spec)}
            return out | {"sample:" + k for k in spec["meta"].get("samples", [])}

        task_split: dict[str, dict[str, str]] = {}  # content -> task -> split
        spec_contents = [contents(sp) for sp in self.specs]
        for sp, cs in zip(self.specs, spec_contents):
            if sp["assign"].startswith("task:"):
                _, task, split = sp["assign"].split(":")
                for c in cs:
                    other = task_split.setdefault(c, {}).setdefault(task, split)
                    if other != split:
                        raise RuntimeError(f"MiniStew plan: task {task} uses content {c} in {other} and {split}")
        keep = [not (sp["assign"] == "pretrain" and any(c in task_split for c in cs))
                for sp, cs in zip(self.specs, spec_contents)]
        self.skipped["pretrain_clips_sharing_task_content"] = keep.count(False)
        self.specs = [sp for sp, k in zip(self.specs, keep) if k]

    # -------------------------------------------------------------------------------------------- speech
    def _espeak_spec(self, text_pool, names, lang, variant, assign, pitch_level=None, rate_level=None,
                     source="ministew/espeak_tts", labels=(), speed=(0.9, 1.1)):
        rng = self.rng
        codes = [self.pick(text_pool) for _ in range(int(rng.integers(3, 7)))]
        text = ", ".join(names[lang][c] for c in codes)
        pl = pitch_level or self.pick(list(speech.PITCH_LEVELS))
        rl = rate_level or self.pick(list(speech.RATE_LEVELS))
        pitch = int(rng.integers(*speech.PITCH_LEVELS[pl]))
        rate = int(rng.integers(*speech.RATE_LEVELS[rl]))
        gender, char = speech.ESPEAK_VARIANTS[variant]
        meta = {"lang": lang, "gender": gender, "character": char, "pitch_level": pl, "rate_level": rl,
                "transcript": text, "voice": f"{lang}+{variant}", "synthetic": True, "espeak_pitch": pitch,
                "espeak_rate": rate}
        p = {"text": text, "lang": lang, "variant": variant, "rate": rate, "pitch": pitch,
             "range": int(rng.integers(20, 80)), "snr_db": float(rng.uniform(8, 30)), "gain": float(rng.uniform(0.3, 1.0)),
             "speed": float(rng.uniform(*speed))}
        self.add("espeak", p, "speech", source, [f"iso-codes:3166:{c}" for c in codes], assign,
                 labels or [speech.ESPEAK_VARIANTS[variant][0] + " speech", lang], meta)

    def plan_speech(self):
        cfg, rng = self.cfg, self.rng
        per_class = cfg.speech_per_class or cfg.per_class
        langs = sorted(set(cfg.espeak_langs) | set(cfg.lid_langs))
        codes, names = speech.country_names(self.debs["iso-codes"].root, langs)
        pools = partition(codes, task_fractions(cfg.task_share), self.seed, "iso3166")
        variants = sorted(speech.ESPEAK_VARIANTS)
        # language_id's voices: either a fixed short list in every split (tiny), or split so that val/test
        # voices are unseen in training; those held-out voices then never speak in pretraining either.
        if cfg.style_variants:
            vpools = {k: list(cfg.style_variants) for k in SPLITS}
            held_voices: set[str] = set()
        else:
            other = [v for v in variants if v not in cfg.voice_variants]
            vpools = partition(other, {"train": 0.5, "val": 0.2, "test": 0.3}, self.seed, "variants")
            held_voices = set(vpools["val"]) | set(vpools["test"])
        pre_variants = [v for v in variants if v not in held_voices]
        for _ in range(cfg.n_espeak):
            self._espeak_spec(pools["pretrain"], names, self.pick(list(cfg.espeak_langs)), self.pick(pre_variants),
                              "pretrain")

        # voice_id: which voice variant (a speaker-ID stand-in); texts differ between splits.
        self.task("voice_id", "multiclass", "accuracy", cfg.voice_variants, "speech",
                  "Which espeak-ng voice variant speaks (speaker-identification analogue); random pitch, rate and "
                  "room noise per clip; test texts (country names) never occur in train.")
        for split in SPLITS:
            for v in cfg.voice_variants:
                for _ in range(per_class[split]):
                    self._espeak_spec(pools[split], names, "en", v, f"task:voice_id:{split}", labels=[v])
        # pitch_level: only voices on which the espeak pitch bands give non-overlapping F0 (male, not whispered).
        pitch_voices = [v for v in (cfg.style_variants or speech.PITCH_VOICES) if v in speech.PITCH_VOICES]
        if not pitch_voices:
            raise ValueError(f"profile {cfg.name}: style_variants {cfg.style_variants} has none of "
                             f"speech.PITCH_VOICES {speech.PITCH_VOICES}; pitch_level needs one")
        self.task("language_id", "multiclass", "accuracy", cfg.lid_langs, "speech",
                  "Spoken language of synthetic speech; test texts are unseen in training and pretraining"
                  + ("." if cfg.style_variants else
                     f"; val/test voices ({', '.join(sorted(held_voices))}) speak neither in its train split nor in pretraining."))
        f0 = speech.PITCH_F0_HZ
        self.task("pitch_level", "multiclass", "accuracy", list(speech.PITCH_LEVELS), "speech",
                  "Voice pitch class of male espeak-ng voices (" + ", ".join(pitch_voices) + "; no whisper): "
                  f"median F0 below {f0['low'][1]} Hz = low, {f0['medium'][0]}-{f0['medium'][1]} Hz = medium, "
                  f"above {f0['high'][0]} Hz = high (espeak pitch 0-9 / 45-56 / 90-99, speed within 3%); "
                  "test texts are unseen in training.")
        for split in SPLITS:
            for lang in cfg.lid_langs:
                for _ in range(per_class[split]):
                    self._espeak_spec(pools[split], names, lang, self.pick(vpools[split]), f"task:language_id:{split}",
                                      labels=[lang])
            for pl in speech.PITCH_LEVELS:
                for _ in range(per_class[split]):
                    self._espeak_spec(pools[split], names, self.pick(list(cfg.pitch_langs or cfg.lid_langs)),
                                      self.pick(pitch_voices), f"task:pitch_level:{split}", pitch_level=pl,
                                      labels=[pl], speed=(0.97, 1.03))
        n_ret = cfg.n_retrieval
        for split in SPLITS:
            for _ in range(n_ret[split] // 3):
                self._espeak_spec(pools[split], names, self.pick(list(cfg.espeak_langs)), self.pick(variants),
                                  f"task:retrieval:{split}")

        if "tuxpaint-stamps-default" in self.debs and cfg.n_tuxpaint:
            items = speech.tuxpaint_speech_items(self.debs["tuxpaint-stamps-default"].root)
            # Stamps reuse one recording under several names (frog-1_desc_be.ogg == frog_desc_be.ogg): one each.
            n_all = len(items)
            items = sorted((g[0] for g in group_by_content(items).values()), key=lambda it: it["path"])
            self.skipped["tuxpaint_speech_duplicates"] = n_all - len(items)
            idx = rng.permutation(len(items))[: cfg.n_tuxpaint]
            for i in sorted(idx):
                it = items[i]
                meta = {"lang": it["lang"].lower(), "gender": "unknown", "transcript": it["transcript"],
                        "synthetic": False, "stamp": it["stamp"]}
                self.add("file", {"path": it["path"], "gain": float(rng.uniform(0.4, 1.0))}, "speech",
                         "ministew/tuxpaint_speech", [f"tuxpaint-stamps-default:{it['path'].split('/stamps/')[-1]}"],
                         "pretrain", ["speech", it["lang"]], meta)
        if "klettres-data" in self.debs and cfg.n_klettres:
            items = speech.klettres_items(self.debs["klettres-data"].root)
            idx = rng.permutation(len(items))[: cfg.n_klettres]
            for i in sorted(idx):
                it = items[i]
                meta = {"lang": it["lang"].split("_")[0], "gender": "unknown", "transcript": it["transcript"],
                        "synthetic": False, "rate_level": "slow"}
                self.add("file", {"path": it["path"]}, "speech", "ministew/klettres",
                         [f"klettres-data:{it['path'].split('/klettres/')[-1]}"], "pretrain", ["speech", meta["lang"]], meta)
        if "hedgewars-data" in self.debs:
            items = speech.hedgewars_voice_items(self.debs["hedgewars-data"].root)
            task_packs = set(cfg.hedgewars_task_packs)
            if task_packs:
                self.task("speaker_id", "multiclass", "accuracy", sorted(task_packs), "speech",
                          "Which Hedgewars voice pack (a real recorded voice actor) speaks; split by phrase, so test "
                          "phrases are never heard in training.")
            phrases = sorted({it["phrase"] for it in items})
            ppools = partition(phrases, {"train": 0.6, "val": 0.15, "test": 0.25}, self.seed, "hw-phrases")
            phrase_split = {ph: s for s, lst in ppools.items() for ph in lst}
            # Packs reuse each other's recordings (HillBilly/PoisonMoan.ogg == Default/PoisonMoan.ogg): one item
            # per content. A recording shared by several packs has no single speaker label: it stays out of
            # speaker_id, and one copy (from a non-task pack when there is one) goes to pretraining.
            kept = []
            for group in group_by_content(items).values():
                packs = {it["pack"] for it in group}
                if len(packs) == 1:
                    kept.append(group[0])
                else:
                    free = [it for it in group if it["pack"] not in task_packs]
                    kept.append({**(free or group)[0], "shared": True})
            self.skipped["hedgewars_voice_duplicates"] = len(items) - len(kept)
            for it in sorted(kept, key=lambda it: it["path"]):
                meta = {"lang": it["lang"], "gender": it["gender"], "character": it["character"],
                        "transcript": None, "synthetic": False, "voice_pack": it["pack"], "phrase": it["phrase"]}
                origin = [f"hedgewars-data:voices/{it['pack']}/{it['path'].rsplit('/', 1)[-1]}"]
                if it["pack"] in task_packs and not it.get("shared"):
                    assign, labels = f"task:speaker_id:{phrase_split[it['phrase']]}", [it["pack"]]
                else:
                    assign, labels = "pretrain", ["speech", it["lang"], it["character"]]
                self.add("file", {"path": it["path"]}, "speech", "ministew/hedgewars_voices", origin, assign, labels, meta)

    # --------------------------------------------------------------------------------------------- music
    def _score_spec(self, score, folder, sf_name, programs, assign, labels=None):
        rng = self.rng
        tempo = int(rng.integers(60, 150))
        genre, composer = music.CORPUS_GENRES.get(folder, ("classical music", None))
        if folder == "ryansMammoth":  # the tune type is in the title: ...Reel.abc, ...Strathspey.abc
            kind = next((k for k in ("reel", "jig", "hornpipe", "strathspey", "march", "waltz", "polka", "air")
                         if k in score.lower()), None)
            genre = f"traditional {kind}" if kind else genre
        import pretty_midi

        inst_names = [pretty_midi.program_to_instrument_name(p).lower() for p in programs]
        texture = "chorale" if folder == "bach" else ("polyphonic passage" if len(programs) > 1 else "melody")
        meta = {"genre": genre, "composer": composer, "tempo_bpm": tempo, "instruments": inst_names,
                "families": sorted({music.PROGRAM_FAMILY[p] for p in programs}), "soundfont": sf_name,
                "score": score, "texture": texture}
        p = {"score": score, "sf": str(self.soundfonts[sf_name]), "programs": list(programs), "tempo": tempo,
             "target_s": float(rng.uniform(5.0, 10.0))}
        self.add("score", p, "music", "ministew/music21_render", [f"music21:{score}"], assign,
                 labels if labels is not None else ["music", *meta["families"], *inst_names], meta)

    def plan_music(self):
        cfg, rng = self.cfg, self.rng
        self.soundfonts = music.soundfont_paths(self.debs)
        sf_names = sorted(self.soundfonts)
        scores = music.score_paths(cfg.score_folders)
        folder_of = dict((s, f) for f, s in scores)
        pools = partition([s for _, s in scores], task_fractions(0.3), self.seed, "scores")
        if cfg.max_scores:
            pools = {k: v[: cfg.max_scores.get(k, len(v))] for k, v in pools.items()}
        all_programs = sorted(music.PROGRAM_FAMILY)
        # instrument_family's test soundfont never renders pitched instruments for pretraining or train/val.
        train_sfs = [s for s in sf_names if s != "MuseScoreGeneralLite"]
        for _ in range(cfg.n_scores):
            score = self.pick(pools["pretrain"])
            progs = sorted({self.pick(all_programs) for _ in range(int(rng.integers(1, 3)))})
            self._score_spec(score, folder_of[score], self.pick(train_sfs), progs, "pretrain")

        # instrument_family under a soundfont shift: train/val render through TimGM6mb (and FluidR3 when present),
        # test through MuseScore General; scores are disjoint across splits.
        self.task("instrument_family", "multiclass", "accuracy", cfg.families, "music",
                  "General-MIDI instrument family of a rendered score excerpt; test renders unseen scores through "
                  "MuseScore General, a soundfont never used for score renders in train/val or pretraining.")
        for split in SPLITS:
            for fam in cfg.families:
                for _ in range(cfg.per_class[split]):
                    score = self.pick(pools[split])
                    sf_name = "MuseScoreGeneralLite" if split == "test" else self.pick(train_sfs)
                    self._score_spec(score, folder_of[score], sf_name, [self.pick(music.GM_FAMILIES[fam])],
                                     f"task:instrument_family:{split}", labels=[fam])
            for _ in range(cfg.n_retrieval[split] // 3):
                score = self.pick(pools[split])
                progs = sorted({self.pick(all_programs) for _ in range(int(rng.integers(1, 3)))})
                self._score_spec(score, folder_of[score], self.pick(sf_names), progs, f"task:retrieval:{split}")

        self._plan_drums(sf_names)

    def _plan_drums(self, sf_names):
        """Drum sounds held out by sample identity: a "sound" is a soundfont kit's key (the samples it plays) or
        a hydrogen kit's instrument (its sample files, by content). Sounds that share a sample are one group,
        and each group lands in one pool, so no test drum sample is heard in train or pretraining, even where
        kits reuse each other's samples (soundfont presets do: "Brush" keeps the "Standard" kick)."""
        cfg, rng = self.cfg, self.rng
        sounds = []  # {kit, kind, cls, samples, and note (sf) or files (h2)}
        for sf_name in sf_names:
            table = music.soundfont_drum_samples(self.soundfonts[sf_name])
            for preset, kname in music.SF_DRUM_KITS.items():
                kit = {"id": f"{sf_name}:{kname}", "kind": "sf", "sf": str(self.soundfonts[sf_name]), "preset": preset,
                       "name": f"{kname} kit ({sf_name})"}
                for cls in music.DRUM_CLASSES:
                    for note in music.GM_DRUM_NOTES[cls]:
                        smp = table.get(preset, {}).get(note)
                        if smp:
                            sounds.append({"kit": kit, "cls": cls, "note": note,
                                           "samples": sorted(f"{sf_name}#{i}" for i in smp)})
        if "hydrogen-drumkits" in self.debs:
            for k in music.hydrogen_kits(self.debs["hydrogen-drumkits"].root):
                kit = {"id": f"hydrogen:{k['dir']}", "kind": "h2", "name": f"{k['kit']} kit"}
                for inst in k["instruments"]:
                    sounds.append({"kit": kit, "cls": inst["cls"], "files": inst["files"],
                                   "samples": sorted({"h2#" + content_digest(f) for f in inst["files"]})})
        # Union-find over shared samples.
        parent = list(range(len(sounds)))

        def find(i):
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        owner: dict[str, int] = {}
        for i, snd in enumerate(sounds):
            for smp in snd["samples"]:
                if smp in owner:
                    parent[find(i)] = find(owner[smp])
                else:
                    owner[smp] = i
        groups: dict[int, list[int]] = {}
        for i in range(len(sounds)):
            groups.setdefault(find(i), []).append(i)
        # A group is named by its smallest sample key (stable across runs) and stratified by its first class.
        gname = {r: min(k for i in idx for k in sounds[i]["samples"]) for r, idx in groups.items()}
        pool_of: dict[int, str] = {}
        for cls in music.DRUM_CLASSES:
            roots = [r for r, idx in groups.items()
                     if min(music.DRUM_CLASSES.index(sounds[i]["cls"]) for i in idx) == music.DRUM_CLASSES.index(cls)]
            by_name = {gname[r]: r for r in roots}
            parts = partition(list(by_name), {"pretrain": 0.35, "train": 0.35, "val": 0.1, "test": 0.2},
                              self.seed, f"drums:{cls}")
            for pool, names in parts.items():
                for n in names:
                    pool_of[by_name[n]] = pool
        pool_sounds: dict[str, list[dict]] = {k: [] for k in ("pretrain", *SPLITS)}
        for i, snd in enumerate(sounds):
            pool_sounds[pool_of[find(i)]].append(snd)

        self.task("drum_instrument", "multiclass", "accuracy", music.DRUM_CLASSES, "music",
                  "Which drum (kick, snare, hi-hat, tom, cymbal) plays a few hits; test drum samples (soundfont "
                  "samples, hydrogen sample files) are never heard in training or pretraining, even where a test "
                  "kit's preset also appears there.")
        for split in SPLITS:
            for cls in music.DRUM_CLASSES:
                cands = [snd for snd in pool_sounds[split] if snd["cls"] == cls]
                if not cands:
                    raise RuntimeError(f"drum_instrument: no held-out '{cls}' sound for split {split}; the soundfonts "
                                       f"{sf_names} share too many samples: add a soundfont or hydrogen-drumkits")
                for _ in range(cfg.drum_per_class[split]):
                    snd = self.pick(cands)
                    kit = snd["kit"]
                    if kit["kind"] == "sf":
                        p = {"kind": "sf", "sf": kit["sf"], "preset": kit["preset"], "note": snd["note"]}
                        origin = f"soundfont-kit:{kit['id']}:{p['note']}"
                    else:
                        p = {"kind": "h2", "file": self.pick(snd["files"])}
                        origin = f"hydrogen-drumkits:{p['file'].split('/drumkits/')[-1]}"
                    meta = {"instruments": [cls], "kit": kit["name"], "genre": "drum hits", "tempo_bpm": 120,
                            "texture": "few strokes", "samples": snd["samples"]}
                    self.add("drum_hits", p, "music", "ministew/drum_hits", [origin], f"task:drum_instrument:{split}",
                             [cls], meta)
        # Pretraining loops: a kit's pretraining sounds only; a class without one is left out of the loop.
        by_kit: dict[str, dict[str, list[dict]]] = {}
        kits = {}
        for snd in pool_sounds["pretrain"]:
            by_kit.setdefault(snd["kit"]["id"], {}).setdefault(snd["cls"], []).append(snd)
            kits[snd["kit"]["id"]] = snd["kit"]
        kit_ids = sorted(by_kit)
        for _ in range(cfg.n_drum_loops):
            kit = kits[self.pick(kit_ids)]
            pattern = self.pick(sorted(music.DRUM_PATTERNS))
            tempo = int(rng.integers(70, 170))
            use = {c: self.pick(by_kit[kit["id"]][c]) for c in music.DRUM_PATTERNS[pattern] if c in by_kit[kit["id"]]}
            if not use:  # none of the pattern's drums is a pretraining sound of this kit
                self.skipped["drum_loops_without_sounds"] = self.skipped.get("drum_loops_without_sounds", 0) + 1
                continue
            if kit["kind"] == "sf":
                p = {"kind": "sf", "sf": kit["sf"], "preset": kit["preset"], "notes": {c: s_["note"] for c, s_ in use.items()}}
                origins = [f"soundfont-kit:{kit['id']}:{s_['note']}" for s_ in use.values()]
            else:
                files = {c: self.pick(s_["files"]) for c, s_ in use.items()}
                p = {"kind": "h2", "files": files}
                origins = [f"hydrogen-drumkits:{f.split('/drumkits/')[-1]}" for f in files.values()]
            p.update({"pattern": pattern, "tempo": tempo, "target_s": float(rng.uniform(4, 10))})
            parts = [c for c in music.DRUM_PATTERNS[pattern] if c in use]
            insts = [("drum kit " + c) if c != "kick" else "kick drum" for c in parts]
            meta = {"instruments": ["drum kit"], "drum_parts": insts, "kit": kit["name"], "genre": pattern,
                    "tempo_bpm": tempo, "texture": pattern, "samples": sorted({k for s_ in use.values() for k in s_["samples"]})}
            self.add("drum_loop", p, "music", "ministew/drum_loops", origins, "pretrain", ["music", "drums", pattern, *parts], meta)

    # --------------------------------------------------------------------------------------------- sound
    def plan_sound(self):
        cfg, rng = self.cfg, self.rng
        items = []
        for pkg in self.debs:
            if pkg in sound.SFX_GLOBS:
                its, skipped = sound.sfx_items(pkg, self.debs[pkg].root)
                items += its
                self.skipped[f"sfx:{pkg}"] = skipped
        items.sort(key=lambda it: it["path"])
        # One item per content: packages ship the same sound under several names (copies, symlinks), sometimes
        # with names that categorise differently; the first path of each content group represents it.
        n_all = len(items)
        items = [g[0] for g in group_by_content(items).values()]
        items.sort(key=lambda it: it["path"])
        self.skipped["sfx_duplicate_contents"] = n_all - len(items)
        counts: dict[str, int] = {}
        for it in items:
            counts[it["category"]] = counts.get(it["category"], 0) + 1
        task_classes = sorted(cfg.sound_classes or sorted(counts, key=lambda c: (-counts[c], c))[: cfg.n_sound_classes])
        missing = [c for c in task_classes if counts.get(c, 0) < 4]
        if missing:
            raise RuntimeError(f"sound_event classes {missing} have < 4 effect files in {sorted(self.debs)}; "
                               "choose other sound_classes in the profile")
        by_path = {it["path"]: it for it in items}
        # Stratified by category so that every held-out class has files in every split.
        pools: dict[str, list] = {k: [] for k in ("pretrain", *SPLITS)}
        for cls in task_classes:
            cls_paths = [it["path"] for it in items if it["category"] == cls]
            for k, v in partition(cls_paths, task_fractions(min(0.9, cfg.task_share + 0.1)), self.seed, f"sfx:{cls}").items():
                pools[k] += v
        pretrain_items = [by_path[p] for p in pools["pretrain"]] + [it for it in items if it["category"] not in task_classes]
        pretrain_items.sort(key=lambda it: it["path"])
        if cfg.max_sfx_pretrain is not None and len(pretrain_items) > cfg.max_sfx_pretrain:
            keep = rng.permutation(len(pretrain_items))[: cfg.max_sfx_pretrain]
            pretrain_items = [pretrain_items[i] for i in sorted(keep)]

        def origin(it):
            return f"{it['pkg']}:{it['path'].split('/usr/share/', 1)[-1]}"

        def sfx_spec(it, assign, labels, aug):
            p = {"path": it["path"], "gain": float(rng.uniform(0.3, 1.0))}
            repeated = False
            if aug:
                p["speed"] = float(rng.uniform(0.85, 1.15))
                if rng.random() < 0.4:
                    p["repeat"] = int(rng.integers(2, 4))
                    repeated = True
            ev = {"label": it["category"], "phrase": sound.event_phrase(it, rng), "tags": it["tags"]}
            meta = {"events": [ev], "repeated": repeated, "file": it["name"], "package": it["pkg"]}
            src = "ministew/" + SFX_SOURCE_NAMES.get(it["pkg"], it["pkg"].split("-")[0]) + "_sfx"
            self.add("sfx", p, "sound", src, [origin(it)], assign, labels, meta)

        for it in pretrain_items:
            for k in range(1 + cfg.sfx_aug_per_file):
                sfx_spec(it, "pretrain", [it["category"], *it["tags"]], aug=k > 0)

        def mixture_spec(pool, assign, task_labels: bool):
            n_ev = int(rng.integers(2, 4))
            evs = [self.pick(pool) for _ in range(n_ev)]
            duration = float(rng.uniform(5, 10))
            slot = duration / n_ev
            onsets = [round(float(i * slot + rng.uniform(0, slot * 0.5)), 3) for i in range(n_ev)]
            p = {"duration": duration, "onsets": onsets,
                 "events": [{"path": e["path"], "category": e["category"]} for e in evs]}
            meta_events = [{"label": e["category"], "phrase": sound.event_phrase(e, rng), "tags": e["tags"]} for e in evs]
            labels = sorted({e["category"] for e in evs})
            self.add("mixture", p, "sound", "ministew/sfx_mixtures", [origin(e) for e in evs], assign,
                     labels, {"events": meta_events})

        for _ in range(cfg.n_mixtures):
            mixture_spec(pretrain_items, "pretrain", False)

        self.task("sound_event", "multiclass", "accuracy", task_classes, "sound",
                  "Category of a real sound effect from Debian game/theme packages; test files (by content: copies "
                  "and links count as one file) are never used in training or pretraining.")
        self.task("event_detection", "sed", "segment_f1", task_classes, "sound",
                  "Frame-level detection of effect events in mixtures with exact onsets (custom['events'] = "
                  "[label, onset_s, offset_s]); train/val/test draw on effect files disjoint by content, none used "
                  "in pretraining.")
        self.task("retrieval", "retrieval", "R@k", [], "all",
                  "Audio-text retrieval over held-out clips of all three domains with their captions "
                  "(R@1/5/10 on test).")
        for split in SPLITS:
            split_items = [by_path[p] for p in pools[split]]
            for cls in task_classes:
                cls_items = [it for it in split_items if it["category"] == cls]
                if not cls_items:
                    raise RuntimeError(f"sound_event: no held-out '{cls}' files for split {split}; raise task_share")
                for _ in range(cfg.per_class[split]):
                    sfx_spec(self.pick(cls_items), f"task:sound_event:{split}", [cls], aug=True)
            for _ in range(cfg.n_sed[split]):
                mixture_spec(split_items, f"task:event_detection:{split}", True)
            for _ in range(cfg.n_retrieval[split] - 2 * (cfg.n_retrieval[split] // 3)):
                it = self.pick(split_items)
                sfx_spec(it, f"task:retrieval:{split}", [it["category"], *it["tags"]], aug=True)
