"""Speech sources: espeak-ng synthesis (controlled voice / rate / pitch, texts from Debian iso-codes
translations), recorded stamp descriptions (tuxpaint-stamps-default), spoken letters (klettres-data) and
game voice packs (hedgewars-data)."""
from __future__ import annotations

import ctypes
import gettext
import json
import re
from pathlib import Path

import numpy as np

from audiolp.data.ministew.audio import load_audio, resample, trim_silence

# espeak-ng voice variants used by MiniStew: name -> (gender, character word or None).
ESPEAK_VARIANTS = {
    "m1": ("male", None), "m3": ("male", None), "m5": ("male", None), "m7": ("male", None),
    "f1": ("female", None), "f2": ("female", None), "f3": ("female", None), "f4": ("female", None),
    "croak": ("male", "croaky"), "klatt": ("male", "robotic"), "whisper": ("male", "whispering"),
    "Annie": ("female", None), "Andy": ("male", None), "grandma": ("female", "elderly"),
    "grandpa": ("male", "elderly"), "Storm": ("male", None), "belinda": ("female", None), "boris": ("male", None),
}
# espeak language voice -> iso-codes locale directory.
ESPEAK_LANGS = {"en": "en", "fr": "fr", "de": "de", "es": "es", "it": "it", "pt": "pt", "ru": "ru", "pl": "pl",
                "nl": "nl", "sv": "sv", "el": "el", "tr": "tr", "fi": "fi", "cs": "cs", "hu": "hu", "ro": "ro"}
# espeak pitch parameter bands (0-99). On the male, non-whispered voices of PITCH_VOICES the bands give
# non-overlapping median F0 (measured over en/fr/de/ru/el at speed 1.0): low 48-72 Hz, medium 80-110 Hz,
# high 128-172 Hz. Female and whispered voices sit elsewhere (or have no F0), so pitch_level uses only these.
PITCH_LEVELS = {"low": (0, 9), "medium": (45, 56), "high": (90, 100)}
PITCH_VOICES = ("m1", "m3", "m5", "m7", "klatt", "Andy", "grandpa", "boris", "croak")
PITCH_F0_HZ = {"low": (0, 76), "medium": (76, 120), "high": (120, 1000)}  # the measured rule the bands satisfy
RATE_LEVELS = {"slow": (105, 130), "normal": (160, 185), "fast": (250, 290)}  # words per minute


def median_f0(x: np.ndarray, sr: int, fmin: float = 40.0, fmax: float = 400.0) -> float:
    """Median F0 (Hz) over voiced 60 ms frames by normalised autocorrelation; NaN when no frame is voiced.

    A sub-harmonic check (a peak at 2x or 3x the lag nearly as strong) keeps it from reporting a harmonic.
    Used to check pitch_level's rule (PITCH_F0_HZ), not to make clips.
    """
    x = np.asarray(x, np.float64)
    x = x / (np.abs(x).max() + 1e-12)
    n = int(0.06 * sr)
    lo, hi = int(sr / fmax), int(sr / fmin)
    out = []
    for i in range(0, x.size - n, n // 2):
        fr = x[i:i + n] - x[i:i + n].mean()
        if np.sqrt(np.mean(fr ** 2)) < 0.03:
            continue
        ac = np.correlate(fr, fr, "full")[n - 1:]
        ac = ac / (ac[0] * (n - np.arange(n)) / n + 1e-12)
        seg = ac[lo:hi]
        k = int(np.argmax(seg))
        best = seg[k]
        for m in (2, 3):
            j = (k + lo) * m - lo
            if j < seg.size - 2:
                jj = j - 2 + int(np.argmax(seg[j - 2:j + 3]))
                if seg[jj] > 0.9 * best:
                    k = jj
        if best > 0.5:
            out.append(sr / (k + lo))
    return float(np.median(out)) if out else float("nan")



# ------------------------------------------------------------------------------------------ iso-codes text
def country_names(iso_root: Path, langs) -> tuple[list[str], dict[str, dict[str, str]]]:
    """Country names in each language from iso-codes' JSON + gettext catalogues: (codes, {lang: {code: name}})."""
    data = json.loads((iso_root / "usr/share/iso-codes/json/iso_3166-1.json").read_text())["3166-1"]
    codes = [d["alpha_2"] for d in data]
    english = {d["alpha_2"]: d["name"] for d in data}
    out: dict[str, dict[str, str]] = {}
    for lang in langs:
        loc = ESPEAK_LANGS.get(lang, lang)
        mo = iso_root / f"usr/share/locale/{loc}/LC_MESSAGES/iso_3166-1.mo"
        if lang == "en":
            out[lang] = dict(english)
            continue
        if not mo.exists():
            raise FileNotFoundError(f"iso-codes has no catalogue {mo}; drop language {lang!r} from the MiniStew config")
        with open(mo, "rb") as f:
            tr = gettext.GNUTranslations(f)
        out[lang] = {c: tr.gettext(english[c]) for c in codes}
    return codes, out


# --------------------------------------------------------------------------------------------- espeak-ng
class _Espeak:
    """ctypes binding to libespeak-ng from the espeakng_loader wheel (one per process: espeak is global state).

    libespeak-ng keeps state from one utterance to the next that neither espeak_Terminate nor the seed API
    resets (the same call twice differs from ~0.1 s on). MiniStew therefore runs each build unit in a fresh
    worker process (see build.py), so a clip depends only on its unit, never on scheduling.
    """

    def __init__(self):
        import espeakng_loader

        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.lib.espeak_Initialize.restype = ctypes.c_int
        # AUDIO_OUTPUT_RETRIEVAL = 1: samples come back through the callback, nothing plays.
        self.sr = self.lib.espeak_Initialize(1, 0, espeakng_loader.get_data_path().encode(), 0)
        if self.sr <= 0:
            raise RuntimeError("espeak_Initialize failed; check the espeakng_loader wheel's data path")
        self._buf: list[np.ndarray] = []
        cbtype = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

        def _cb(wav, n, events):
            if n > 0:
                self._buf.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        self._cb = cbtype(_cb)  # keep a reference: ctypes callbacks die with their Python object
        self.lib.espeak_SetSynthCallback(self._cb)

    def synth(self, text: str, voice: str, rate: int, pitch: int, pitch_range: int = 50) -> np.ndarray:
        self._buf.clear()
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"espeak-ng has no voice {voice!r}; pick a language+variant that espeak-ng-data ships")
        self.lib.espeak_SetParameter(1, int(rate), 0)  # espeakRATE
        self.lib.espeak_SetParameter(3, int(pitch), 0)  # espeakPITCH
        self.lib.espeak_SetParameter(4, int(pitch_range), 0)  # espeakRANGE
        b = text.encode("utf-8")
        self.lib.espeak_Synth(b, len(b) + 1, 0, 0, 0, 1, None, None)  # espeakCHARS_UTF8
        self.lib.espeak_Synchronize()
        x = np.concatenate(self._buf) if self._buf else np.zeros(0, np.int16)
        return x.astype(np.float32) / 32768.0


_ESPEAK: _Espeak | None = None


def espeak_used_in_process() -> bool:
    return _ESPEAK is not None


def espeak() -> _Espeak:
    global _ESPEAK
    if _ESPEAK is None:
        _ESPEAK = _Espeak()
    return _ESPEAK


def gen_espeak(p: dict, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Synthesize ``p['text']`` with voice ``lang+variant`` at the given rate/pitch; adds room noise at a seeded SNR."""
    e = espeak()
    x = e.synth(p["text"], f"{p['lang']}+{p['variant']}", p["rate"], p["pitch"], p.get("range", 50))
    # Speed perturbation by resampling shifts formants and F0 together: speaker-like variation within a voice.
    x = resample(trim_silence(x), int(round(e.sr * float(p.get("speed", 1.0)))))
    if p.get("snr_db") is not None and x.size:
        from scipy.signal import lfilter

        # Gently low-passed noise (one-pole, a=0.6): room-like hiss that does not bury the voice's F0 region.
        noise = lfilter([1.0], [1.0, -0.6], rng.standard_normal(x.size)).astype(np.float32)
        sig_p = float(np.mean(x ** 2)) + 1e-9
        noise *= np.sqrt(sig_p / (np.mean(noise ** 2) + 1e-12) / 10 ** (p["snr_db"] / 10))
        x = x + noise.astype(np.float32)
    return x * float(p.get("gain", 1.0)), {}


def gen_file(p: dict, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """A recorded file (speech or effect), trimmed of silence; optional gain."""
    x = trim_silence(load_audio(p["path"]))
    return x * float(p.get("gain", 1.0)), {}


# ------------------------------------------------------------------------------------------- recordings
_STAMP_LANG_RE = re.compile(r"_desc_([a-z]{2}(?:_[a-z]{2})?)\.ogg$")


def tuxpaint_speech_items(root: Path) -> list[dict]:
    """Recorded spoken stamp descriptions: one item per ``<stamp>_desc_<lang>.ogg`` with its transcript."""
    items = []
    stamps = root / "usr/share/tuxpaint/stamps"
    for ogg in sorted(stamps.rglob("*_desc_*.ogg")):
        m = _STAMP_LANG_RE.search(ogg.name)
        if not m:
            continue  # e.g. a doubled extension; skipping is right: the language is unknown
        lang = m.group(1)
        stem = ogg.name[: m.start()]
        txt = ogg.with_name(stem + ".txt")
        transcript = None
        if txt.exists():
            for line in txt.read_text(errors="replace").splitlines():
                if line.startswith(f"{lang}.utf8="):
                    transcript = line.split("=", 1)[1].strip()
                    break
        items.append({"path": str(ogg), "lang": lang, "stamp": str(ogg.relative_to(stamps).parent / stem),
                      "transcript": transcript})
    return items


def klettres_items(root: Path) -> list[dict]:
    items = []
    base = root / "usr/share/klettres"
    for ogg in sorted(base.glob("*/*/*.ogg")):
        lang, kind = ogg.parent.parent.name, ogg.parent.name
        what = "the letter" if kind == "alpha" else "the syllable"
        items.append({"path": str(ogg), "lang": lang.lower(), "transcript": f"{ogg.stem} ({what})", "kind": kind})
    return items


# Hedgewars voice packs: pack -> (language, gender, character).
HEDGEWARS_PACKS = {
    "Pirate": ("en", "male", "gravelly pirate"), "Robot": ("en", "male", "robotic"),
    "Singer": ("en", "male", "sing-song"), "Mobster": ("en", "male", "gruff gangster"),
    "Russian": ("en", "male", "Russian-accented"), "British": ("en", "male", "British-accented"),
    "HillBilly": ("en", "male", "drawling"), "Surfer": ("en", "male", "laid-back"),
    "Classic": ("en", "male", "cartoonish"), "Default": ("en", "male", "squeaky cartoonish"),
    "Default_es": ("es", "male", "squeaky cartoonish"), "Default_pl": ("pl", "male", "squeaky cartoonish"),
    "Default_ru": ("ru", "male", "squeaky cartoonish"), "Default_uk": ("uk", "male", "squeaky cartoonish"),
    "Russian_pl": ("pl", "male", "Russian-accented"),
}


def hedgewars_voice_items(root: Path) -> list[dict]:
    items = []
    base = root / "usr/share/games/hedgewars/Data/Sounds/voices"
    for pack, (lang, gender, char) in HEDGEWARS_PACKS.items():
        for ogg in sorted((base / pack).glob("*.ogg")):
            phrase = re.sub(r"\d+$", "", ogg.stem)
            items.append({"path": str(ogg), "pack": pack, "phrase": phrase, "lang": lang, "gender": gender,
                          "character": char})
    return items
