"""Music sources: music21 corpus scores rendered with tinysoundfont through several soundfonts and General MIDI
programs (composer / key / mode / tempo / instrument metadata), and drums: soundfont drum kits and the real
drum samples of Debian hydrogen-drumkits (instrument names from each kit's drumkit.xml)."""
from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from audiolp.data.ministew.audio import load_audio, trim_silence
from audiolp.data.schema import SAMPLING_RATE

# General MIDI families used for rendering; 0-based program numbers.
GM_FAMILIES = {
    "piano": [0, 1, 2, 4],
    "chromatic percussion": [8, 11, 12, 13],
    "organ": [16, 17, 19, 20],
    "guitar": [24, 25, 26, 27],
    "strings": [40, 41, 42, 48],
    "brass": [56, 57, 60, 61],
    "reed": [64, 65, 68, 71],
    "pipe": [72, 73, 74, 75],
}
PROGRAM_FAMILY = {p: fam for fam, ps in GM_FAMILIES.items() for p in ps}

# music21 corpus folders -> (genre words, composer fallback).
CORPUS_GENRES = {
    "bach": ("Baroque chorale", "Johann Sebastian Bach"),
    "palestrina": ("Renaissance sacred polyphony", "Giovanni Pierluigi da Palestrina"),
    "monteverdi": ("Renaissance madrigal", "Claudio Monteverdi"),
    "trecento": ("medieval Italian song", None),
    "josquin": ("Renaissance motet", "Josquin des Prez"),
    "beethoven": ("Classical-era chamber music", "Ludwig van Beethoven"),
    "mozart": ("Classical-era chamber music", "Wolfgang Amadeus Mozart"),
    "haydn": ("Classical-era string quartet", "Joseph Haydn"),
    "schumann_robert": ("Romantic piano music", "Robert Schumann"),
    "essenFolksong": ("European folk song", None),
    "oneills1850": ("Irish fiddle tune", None),
    "ryansMammoth": ("traditional fiddle tune", None),
    "airdsAirs": ("Scottish air", None),
}


def soundfont_paths(debs: dict) -> dict[str, Path]:
    """Available soundfonts: name -> file. TimGM6mb ships inside pretty_midi; the others come from Debian."""
    import pretty_midi

    out = {"TimGM6mb": Path(os.path.dirname(pretty_midi.__file__)) / "TimGM6mb.sf2"}
    if "musescore-general-soundfont-small" in debs:
        out["MuseScoreGeneralLite"] = debs["musescore-general-soundfont-small"].path(
            "usr/share/sounds/sf3/MuseScore_General_Lite.sf3")
    if "fluid-soundfont-gm" in debs:
        out["FluidR3GM"] = debs["fluid-soundfont-gm"].path("usr/share/sounds/sf2/FluidR3_GM.sf2")
    for name, p in out.items():
        if not Path(p).exists():
            raise FileNotFoundError(f"soundfont {name} expected at {p}; its package did not unpack as expected")
    return out


def score_paths(folders) -> list[tuple[str, str]]:
    """(folder, corpus-relative path) for music21 corpus scores in ``folders``, sorted for determinism."""
    from music21 import corpus

    out = []
    for p in corpus.getPaths():
        s = str(p)
        if "/corpus/" not in s or not s.endswith((".mxl", ".xml", ".krn", ".abc", ".musicxml")):
            continue
        rel = s.split("/corpus/", 1)[1]
        folder = rel.split("/")[0]
        if folder in folders:
            out.append((folder, rel))
    return sorted(out)


# ------------------------------------------------------------------------------------------- rendering
_SYNTHS: dict[str, tuple] = {}


def _synth(sf_path: str):
    import tinysoundfont

    if sf_path not in _SYNTHS:
        s = tinysoundfont.Synth(samplerate=SAMPLING_RATE)
        sfid = s.sfload(str(sf_path))
        _SYNTHS[sf_path] = (s, sfid)
    return _SYNTHS[sf_path]


_RENDERED: set[str] = set()  # soundfonts this process has rendered with (their synth state is no longer fresh)


def preload_soundfonts(paths) -> None:
    """Load soundfonts without rendering, so forked workers inherit identical fresh synths."""
    for p in sorted(str(x) for x in paths):
        if p in _RENDERED:
            _SYNTHS.pop(p, None)
            _RENDERED.discard(p)
        _synth(p)


def render_events(sf_path: str, events: list[tuple[float, float, int, int, int]], programs: dict[int, tuple[int, int, bool]],
                  total_s: float) -> np.ndarray:
    """Render (start_s, dur_s, key, velocity, channel) notes with ``programs[chan] = (bank, preset, is_drums)``.

    The soundfont is loaded once per process (an sf3 takes seconds to decode; build.py preloads them in the
    parent so forked workers share them). tinysoundfont's voice pool carries state between renders, which is
    why each build unit runs in a fresh worker.
    """
    s, sfid = _synth(str(sf_path))
    _RENDERED.add(str(sf_path))
    s.sounds_off()
    for chan, (bank, preset, drums) in programs.items():
        s.program_select(chan, sfid, bank, preset, drums)
    timeline = []
    for st, du, key, vel, ch in events:
        timeline.append((st, 1, key, vel, ch))
        timeline.append((st + du, 0, key, 0, ch))
    timeline.sort(key=lambda e: (e[0], e[1]))
    out = []
    pos = 0
    for t, on, key, vel, ch in timeline:
        n = int(round(min(t, total_s) * SAMPLING_RATE)) - pos
        if n > 0:
            out.append(np.frombuffer(s.generate(n), dtype=np.float32).reshape(-1, 2).mean(axis=1))
            pos += n
        if t >= total_s:
            break
        if on:
            s.noteon(ch, int(key), int(vel))
        else:
            s.noteoff(ch, int(key))
    n = int(total_s * SAMPLING_RATE) - pos
    if n > 0:
        out.append(np.frombuffer(s.generate(n), dtype=np.float32).reshape(-1, 2).mean(axis=1))
    s.sounds_off()
    return np.concatenate(out) if out else np.zeros(0, np.float32)


_SCORE_CACHE: dict[str, dict] = {}


def score_notes(rel: str, rng: np.random.Generator) -> dict:
    """Notes of a corpus score as (offset_q, dur_q, midi, part) plus metadata; memoised per process because task
    and pretraining clips reuse scores and music21 parsing/flattening dominates the render time."""
    from music21 import corpus, stream

    entry = _SCORE_CACHE.get(rel)
    if entry is None:
        parsed = corpus.parse(rel)
        scores = list(parsed.scores) if isinstance(parsed, stream.Opus) else [parsed]
        if not scores:
            raise ValueError(f"music21 corpus file {rel} holds an empty opus")
        if len(_SCORE_CACHE) > 128:
            _SCORE_CACHE.clear()
        entry = _SCORE_CACHE[rel] = {"scores": scores, "infos": {}}
    idx = int(rng.integers(len(entry["scores"]))) if len(entry["scores"]) > 1 else 0
    if idx in entry["infos"]:
        return entry["infos"][idx]
    sc = entry["scores"][idx]
    parts = list(sc.parts) or [sc]
    notes = []
    for i, part in enumerate(parts):
        for n in part.flatten().notes:  # Note and Chord; offsets in a flattened part are absolute
            dq = max(float(n.quarterLength), 0.125)
            for pitch in n.pitches:
                notes.append((float(n.offset), dq, int(pitch.midi), i))
    if not notes:
        raise ValueError(f"music21 score {rel} has no notes")
    md = sc.metadata
    info = {"notes": notes, "n_parts": len(parts),
            "composer": str(md.composer) if md is not None and md.composer else None,
            "title": str(md.title) if md is not None and md.title else None}
    entry["infos"][idx] = info
    return info


# Krumhansl-Kessler key profiles (C major / C minor), for key finding on the excerpt actually heard.
_KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
_PC_NAMES = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"]


def estimate_key(pitches, durations) -> tuple[str, str]:
    """Krumhansl-Schmuckler: correlate the duration-weighted pitch-class histogram with the 24 rotated profiles."""
    hist = np.zeros(12)
    for m, d in zip(pitches, durations):
        hist[int(m) % 12] += d
    best = (-2.0, "C", "major")
    for tonic in range(12):
        for mode, prof in (("major", _KK_MAJOR), ("minor", _KK_MINOR)):
            r = float(np.corrcoef(hist, np.roll(prof, tonic))[0, 1]) if hist.std() > 0 else 0.0
            if r > best[0]:
                best = (r, _PC_NAMES[tonic], mode)
    return f"{best[1]} {best[2]}", best[2]


def gen_score(p: dict, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Render an excerpt of a music21 score: all parts on ``p['programs']`` (cycled) through soundfont ``p['sf']``."""
    info = score_notes(p["score"], rng)
    notes = info["notes"]
    spq = 60.0 / p["tempo"]
    total_q = max(o + d for o, d, _, _ in notes)
    target_q = p["target_s"] / spq
    starts = sorted({o for o, _, _, _ in notes if o + target_q * 0.6 <= total_q} or {0.0})
    start_q = starts[int(rng.integers(len(starts)))]
    window = [(o - start_q, d, m, i) for o, d, m, i in notes if start_q <= o < start_q + target_q]
    programs = p["programs"]
    events, chans = [], {}
    for o, d, m, i in window:
        prog = programs[i % len(programs)]
        ch = programs.index(prog)
        chans[ch] = (0, prog, False)
        vel = int(np.clip(70 + 20 * rng.standard_normal(), 40, 120))
        events.append((o * spq, min(d * spq, 4.0), m + 12 * p.get("octave", 0), vel, ch))
    dur = min(p["target_s"], max(o + d for o, d, *_ in events) + 0.6)
    x = render_events(p["sf"], events, chans, max(dur, 1.0))
    meta = {}
    meta["key"], meta["mode"] = estimate_key([m for _, _, m, _ in window], [d for _, d, _, _ in window])
    for k in ("composer", "title"):
        if info[k]:
            meta[k] = info[k]
    meta["n_parts"] = info["n_parts"]
    return x, meta


# ------------------------------------------------------------------------------------------------ drums
DRUM_CLASSES = ("kick", "snare", "hi-hat", "tom", "cymbal")
GM_DRUM_NOTES = {"kick": [35, 36], "snare": [38, 40], "hi-hat": [42, 44, 46], "tom": [41, 43, 45, 47, 48, 50],
                 "cymbal": [49, 51, 52, 55, 57, 59]}
SF_DRUM_KITS = {0: "Standard", 8: "Room", 16: "Power", 24: "Electronic", 25: "TR-808", 32: "Jazz", 40: "Brush",
                48: "Orchestra"}
_H2_CLASS_RULES = [
    ("kick", r"kick|bass ?drum|\bbd\b|\bkik"),
    ("snare", r"snare|\bsd\b|rimshot|rim shot|side ?stick"),
    ("hi-hat", r"hat|\bhh\b|hihat"),
    ("tom", r"\btom|floor"),
    ("cymbal", r"crash|ride|splash|china|cymbal|\bcym"),
]


def drum_class(name: str) -> str | None:
    n = name.lower()
    for cls, pat in _H2_CLASS_RULES:
        if re.search(pat, n):
            return cls
    return None


def hydrogen_kits(root: Path) -> list[dict]:
    """Kits of hydrogen-drumkits: [{kit, licence, instruments: [{name, cls, files}]}] (unclassifiable names dropped)."""
    kits = []
    for xml in sorted((root / "usr/share/hydrogen/data/drumkits").glob("*/drumkit.xml")):
        try:
            tree = ET.parse(xml)
        except ET.ParseError as e:
            raise ValueError(f"{xml}: not valid XML ({e}); the hydrogen-drumkits package looks damaged") from e
        r = tree.getroot()
        ns = r.tag.split("}")[0] + "}" if r.tag.startswith("{") else ""
        kit = (r.findtext(f"{ns}name") or xml.parent.name).strip()
        lic = (r.findtext(f"{ns}license") or "").strip()
        insts = []
        for inst in r.iter(f"{ns}instrument"):
            name = (inst.findtext(f"{ns}name") or "").strip()
            cls = drum_class(name)
            if cls is None:
                continue
            files = [f.text.strip() for f in inst.iter(f"{ns}filename") if f.text]
            files = [str(xml.parent / f) for f in files if (xml.parent / f).exists()]
            if files:
                insts.append({"name": name, "cls": cls, "files": sorted(set(files))})
        if insts:
            kits.append({"kit": kit, "dir": xml.parent.name, "licence": lic, "instruments": insts})
    return kits


def _riff_chunks(body: bytes):
    off = 0
    while off + 8 <= len(body):
        size = int.from_bytes(body[off + 4:off + 8], "little")
        yield body[off:off + 4].decode("latin-1"), body[off + 8:off + 8 + size]
        off += 8 + size + (size & 1)


def soundfont_drum_samples(sf_path) -> dict[int, dict[int, frozenset[int]]]:
    """Which samples each drum preset (bank 128) plays for each key: {preset: {key: sample indices}}.

    Read from the SF2/SF3 'pdta' tables (preset -> zones -> instrument -> zones -> sampleID, with key ranges),
    without decoding audio. Drum presets of one soundfont share many samples (a "Brush" kit keeps the
    "Standard" kick), so held-out kits are defined by sample identity, not by preset.
    """
    import mmap
    import struct

    with open(sf_path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        if m[:4] != b"RIFF" or m[8:12] != b"sfbk":
            raise ValueError(f"{sf_path}: not a SoundFont (RIFF sfbk) file")
        # pdta is the last list; some files omit the pad byte after an odd-sized sdta, so find it by its tag.
        i = m.rfind(b"pdta")
        if i < 8 or m[i - 8:i - 4] != b"LIST":
            raise ValueError(f"{sf_path}: no 'pdta' list; the soundfont looks truncated")
        body = bytes(m[i + 4:i - 4 + int.from_bytes(m[i - 4:i], "little")])
    t = dict(_riff_chunks(body))

    def recs(name, fmt):
        n = struct.calcsize(fmt)
        return [struct.unpack_from(fmt, t[name], k) for k in range(0, len(t[name]) - n + 1, n)]

    phdr, pbag, pgen = recs("phdr", "<20sHHHIII"), recs("pbag", "<HH"), recs("pgen", "<HH")
    inst, ibag, igen = recs("inst", "<20sH"), recs("ibag", "<HH"), recs("igen", "<HH")

    def zones(bags, gens, b0, b1):
        return [dict(gens[bags[b][0]:bags[b + 1][0]]) for b in range(b0, b1)]

    def keys(z):  # generator 43 = keyRange (lo, hi bytes)
        return (z[43] & 0xFF, z[43] >> 8) if 43 in z else (0, 127)

    out: dict[int, dict[int, set]] = {}
    for k in range(len(phdr) - 1):  # the last record is the terminal EOP
        _, preset, bank, bag0 = phdr[k][:4]
        if bank != 128:
            continue
        per_key = out.setdefault(preset, {})
        for z in zones(pbag, pgen, bag0, phdr[k + 1][3]):
            if 41 not in z:  # generator 41 = instrument; a zone without it is the global zone
                continue
            lo, hi = keys(z)
            ii = z[41]
            for iz in zones(ibag, igen, inst[ii][1], inst[ii + 1][1]):
                if 53 in iz:  # generator 53 = sampleID
                    l2, h2 = keys(iz)
                    for key in range(max(lo, l2), min(hi, h2) + 1):
                        per_key.setdefault(key, set()).add(iz[53])
    return {p: {k: frozenset(v) for k, v in d.items()} for p, d in out.items()}


def gen_drum_hits(p: dict, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """2-4 hits of one drum instrument with varied velocity: a sample file (hydrogen) or a soundfont drum note."""
    n_hits = int(rng.integers(2, 5))
    gap = float(rng.uniform(0.25, 0.55))
    onsets = [0.05 + i * gap for i in range(n_hits)]
    total = onsets[-1] + 0.9
    if p["kind"] == "sf":
        events = [(t, 0.2, p["note"], int(rng.integers(60, 125)), 9) for t in onsets]
        return render_events(p["sf"], events, {9: (128, p["preset"], True)}, total), {}
    hit = trim_silence(load_audio(p["file"]), thresh_db=-50)[: int(0.9 * SAMPLING_RATE)]
    x = np.zeros(int(total * SAMPLING_RATE) + hit.size, np.float32)
    for t in onsets:
        i = int(t * SAMPLING_RATE)
        x[i:i + hit.size] += hit * float(rng.uniform(0.4, 1.0))
    return x, {}


# Drum patterns over 16 sixteenth-note steps: class -> steps hit.
DRUM_PATTERNS = {
    "rock beat": {"kick": [0, 8], "snare": [4, 12], "hi-hat": [0, 2, 4, 6, 8, 10, 12, 14]},
    "disco beat": {"kick": [0, 4, 8, 12], "snare": [4, 12], "hi-hat": [2, 6, 10, 14]},
    "half-time groove": {"kick": [0, 10], "snare": [8], "hi-hat": [0, 2, 4, 6, 8, 10, 12, 14]},
    "breakbeat": {"kick": [0, 6, 10], "snare": [4, 12, 15], "hi-hat": [0, 2, 4, 6, 8, 10, 12, 14]},
    "tom groove": {"kick": [0, 8], "tom": [3, 6, 11, 14], "cymbal": [0]},
    "ride swing": {"kick": [0, 8], "snare": [12], "cymbal": [0, 4, 7, 8, 12, 15]},
}


def gen_drum_loop(p: dict, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """A few bars of a named pattern at ``p['tempo']`` on one kit (soundfont preset or hydrogen samples)."""
    pattern = DRUM_PATTERNS[p["pattern"]]
    step = 60.0 / p["tempo"] / 4
    bars = max(1, int(p["target_s"] / (16 * step)))
    total = bars * 16 * step + 0.8
    hits = []  # (time, class, velocity)
    for b in range(bars):
        for cls, steps in pattern.items():
            for s_ in steps:
                hits.append((b * 16 * step + s_ * step, cls, int(rng.integers(70, 120))))
    if p["kind"] == "sf":
        # p["notes"]: the key of each class this loop may use (the planner keeps held-out samples out).
        notes = p.get("notes") or {c: GM_DRUM_NOTES[c][0] for c in DRUM_CLASSES}
        events = [(t, 0.15, notes[c], v, 9) for t, c, v in hits if c in notes]
        return render_events(p["sf"], events, {9: (128, p["preset"], True)}, total), {}
    samples = {c: trim_silence(load_audio(f), thresh_db=-50)[: int(1.0 * SAMPLING_RATE)] for c, f in p["files"].items()}
    x = np.zeros(int(total * SAMPLING_RATE) + SAMPLING_RATE, np.float32)
    for t, c, v in hits:
        if c not in samples:
            continue
        h = samples[c]
        i = int(t * SAMPLING_RATE)
        x[i:i + h.size] += h * (v / 127)
    return x[: int(total * SAMPLING_RATE)], {}
