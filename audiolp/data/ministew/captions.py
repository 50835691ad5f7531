"""Caption templates imitating the styles of the real CaptionStew corpora, filled from clip metadata.

Styles: ``audiocaps`` (one short event sentence), ``audiosetcaps`` (comma-separated tag list), ``musiccaps``
(several descriptive sentences about a piece), ``paraspeechcaps`` (speaking-style description: gender, pitch,
rate, language, character), ``clotho`` (a longer scene sentence). Every choice draws from a seeded
``numpy.random.Generator`` so a clip's captions depend only on (seed, clip id).
"""
from __future__ import annotations

import numpy as np

LANG_NAMES = {
    "en": "English", "fr": "French", "de": "German", "es": "Spanish", "it": "Italian", "pt": "Portuguese",
    "ru": "Russian", "pl": "Polish", "nl": "Dutch", "sv": "Swedish", "el": "Greek", "tr": "Turkish",
    "ro": "Romanian", "ca": "Catalan", "bg": "Bulgarian", "be": "Belarusian", "da": "Danish", "lt": "Lithuanian",
    "ml": "Malayalam", "uk": "Ukrainian", "fi": "Finnish", "cs": "Czech", "hu": "Hungarian", "eu": "Basque",
    "gl": "Galician", "nb": "Norwegian", "sk": "Slovak", "sl": "Slovenian", "hr": "Croatian", "sr": "Serbian",
    "id": "Indonesian", "vi": "Vietnamese", "ja": "Japanese", "zh": "Chinese", "ko": "Korean", "ar": "Arabic",
    "he": "Hebrew", "hi": "Hindi", "ta": "Tamil", "eo": "Esperanto", "is": "Icelandic", "ga": "Irish",
    "cy": "Welsh", "af": "Afrikaans", "sw": "Swahili", "et": "Estonian", "lv": "Latvian", "mk": "Macedonian",
    "ka": "Georgian", "hy": "Armenian", "th": "Thai", "tl": "Tagalog", "ms": "Malay", "fa": "Persian",
    "en_gb": "British English", "pt_br": "Brazilian Portuguese", "zh_tw": "Taiwanese Mandarin", "nn": "Norwegian",
}


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _cap(s: str) -> str:
    s = " ".join(s.split())
    return s[:1].upper() + s[1:] if s else s


def _a(word: str) -> str:
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word


# ----------------------------------------------------------------------------------------------- speech
_PITCH_ADJ = {"low": ["low-pitched", "deep", "low"], "medium": ["moderately pitched", "mid-range", "normal-pitched"],
              "high": ["high-pitched", "high", "bright"]}
_RATE_ADV = {"slow": ["slowly", "at a slow pace", "in an unhurried way", "deliberately"],
             "normal": ["at a normal pace", "at a moderate speed", "at an even pace"],
             "fast": ["quickly", "rapidly", "at a fast pace", "in a hurried way"]}
_RATE_TAG = {"slow": "slow speech", "normal": "moderate speaking rate", "fast": "fast speech"}
_GENDER_NOUN = {"male": ["man", "male speaker", "man's voice"], "female": ["woman", "female speaker", "woman's voice"],
                "child": ["child", "young speaker"], "unknown": ["person", "speaker", "voice"]}


def speech_captions(meta: dict, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """Captions for a spoken clip; ``meta`` has lang, gender, pitch_level, rate_level, character, transcript."""
    lang = LANG_NAMES.get(str(meta.get("lang", "")).lower(), meta.get("lang_name") or "an unknown language")
    gender = meta.get("gender") or "unknown"
    noun = _pick(rng, _GENDER_NOUN.get(gender, _GENDER_NOUN["unknown"]))
    pitch = meta.get("pitch_level")
    rate = meta.get("rate_level")
    char = meta.get("character")
    synthetic = bool(meta.get("synthetic"))
    text = meta.get("transcript")

    verb = _pick(rng, ["speaks", "talks", "says something", "is speaking", "reads aloud"])
    sent = f"{_a(noun) if not noun.endswith('voice') else 'a ' + noun} {verb} in {lang}"
    if rate:
        sent += " " + _pick(rng, _RATE_ADV[rate])
    if char and rng.random() < 0.7:
        sent += _pick(rng, [f" with {_a(char)} voice", f", sounding {char}", f" in {_a(char)} tone"])
    audiocaps = _cap(sent)

    tags = ["speech", f"{gender} speech" if gender != "unknown" else "voice", lang]
    if pitch:
        tags.append(f"{pitch} pitch")
    if rate:
        tags.append(_RATE_TAG[rate])
    if char:
        tags.append(char)
    if synthetic:
        tags.append(_pick(rng, ["synthesized voice", "text-to-speech", "speech synthesizer"]))
    else:
        tags.append(_pick(rng, ["recorded voice", "narration", "human voice"]))
    order = [tags[0]] + list(rng.permutation(tags[1:]))
    audiosetcaps = ", ".join(order)

    adjs = [a for a in (char, _pick(rng, _PITCH_ADJ[pitch]) if pitch else None) if a]
    g = gender if gender in ("male", "female") else ""
    subj = _pick(rng, [f"A {g} speaker", f"The {g} speaker", f"This {g} talker"] +
                 (["A man", "The man"] if g == "male" else ["A woman", "The woman"] if g == "female" else []))
    voice = f" with {_a(', '.join(adjs) + ' voice')}" if adjs else ""
    para = f"{subj}{voice} delivers {_pick(rng, ['the words', 'an utterance', 'a short passage'])}"
    para += f" in {lang}"
    if rate:
        para += " " + _pick(rng, _RATE_ADV[rate])
    if synthetic:
        para += _pick(rng, [", in a clearly synthetic, machine-like manner.", "; the voice sounds computer generated.",
                            ", with a flat, artificial delivery."])
    else:
        para += _pick(rng, [", recorded close to the microphone.", " in a clear, natural tone.",
                            ", with a friendly, expressive delivery."])
    paraspeech = _cap(para)

    caps = [audiocaps, audiosetcaps, paraspeech]
    styles = ["audiocaps", "audiosetcaps", "paraspeechcaps"]
    if text and rng.random() < 0.5:
        caps.append(_cap(f"{_a(noun)} says in {lang}: \u201c{text.strip()[:160]}\u201d"))
        styles.append("transcript")
    return caps, styles


# ------------------------------------------------------------------------------------------------ music
_TEMPO_WORDS = [(70, "slow"), (100, "moderate"), (130, "upbeat"), (10_000, "fast")]
_MOOD = {"major": ["bright", "cheerful", "uplifting", "warm", "joyful"],
         "minor": ["melancholic", "solemn", "sad", "dark", "introspective"]}


def tempo_word(bpm: float) -> str:
    for lim, w in _TEMPO_WORDS:
        if bpm < lim:
            return w
    return "fast"


def music_captions(meta: dict, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """Captions for a rendered score or drum pattern; ``meta`` has instruments, tempo_bpm, key, mode, composer, genre."""
    instruments = list(meta.get("instruments") or ["instrument"])
    inst = " and ".join(instruments)
    bpm = float(meta.get("tempo_bpm") or 100)
    tw = tempo_word(bpm)
    mode = meta.get("mode")
    key = meta.get("key")
    composer = meta.get("composer")
    genre = meta.get("genre") or "instrumental music"
    texture = meta.get("texture") or "melody"
    mood = _pick(rng, _MOOD.get(mode, ["calm", "steady", "simple", "lively"]))

    ac = _pick(rng, [f"{_a(tw)} {texture} is played on {inst}", f"{inst} play{'s' if len(instruments) == 1 else ''} {_a(tw)} {texture}",
                     f"music with {inst} at {_a(tw)} tempo", f"someone plays {_a(texture)} on {inst}"])
    audiocaps = _cap(ac)

    tags = [genre, *instruments, f"{tw} tempo"]
    if mode:
        tags.append(f"{mode} key")
    if composer and rng.random() < 0.6:
        tags.append(composer)
    tags.append(mood)
    audiosetcaps = ", ".join(["music"] + list(rng.permutation(tags)))

    s1 = _pick(rng, [f"This is {_a(genre)} piece", f"Here is {_a(genre)} recording", f"The song is {_a(genre)} piece",
                     f"This is an instrumental {genre} excerpt"])
    if composer:
        s1 += _pick(rng, [f" by {composer}", f" composed by {composer}", f" in the style of {composer}"])
    s1 += _pick(rng, [f" performed on {inst}.", f" played by {inst}.", f" featuring {inst}."])
    s2 = ""
    if key:
        s2 = _pick(rng, [f" It is in {key}", f" The piece is in the key of {key}", f" The key is {key}"])
        s2 += _pick(rng, [f" at {_a(tw)} tempo of about {int(round(bpm))} BPM.", f", with {_a(tw)} pace around {int(round(bpm))} bpm."])
    else:
        s2 = f" The tempo is {tw}, around {int(round(bpm))} BPM."
    s3 = _pick(rng, [f" The mood is {mood}.", f" It sounds {mood} and {_pick(rng, ['simple', 'elegant', 'sparse', 'rich'])}.",
                     f" The atmosphere is {mood}.", ""])
    s4 = _pick(rng, [" The recording is synthesized and clean, without vocals.", " There are no vocals.",
                     " The sound quality is like a basic MIDI rendering.", ""])
    musiccaps = _cap(s1 + s2 + s3 + s4)
    return [audiocaps, audiosetcaps, musiccaps], ["audiocaps", "audiosetcaps", "musiccaps"]


# ------------------------------------------------------------------------------------------------ sound
def sound_captions(meta: dict, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """Captions for effects and mixtures; ``meta['events']`` is a list of {label, phrase, tags, onset, offset}."""
    events = meta.get("events") or []
    if not events:
        raise ValueError("sound clip metadata has no 'events'; every sound clip needs at least one event")
    phrases = [e["phrase"] for e in events]
    if len(phrases) == 1:
        ac = phrases[0]
        if meta.get("repeated"):
            ac += _pick(rng, [" repeatedly", " several times", " over and over"])
    else:
        joiners = [" and then ", " before ", ", then ", "; afterwards "]
        ac = phrases[0]
        for p in phrases[1:]:
            ac += _pick(rng, joiners) + p
    if meta.get("background"):
        ac += _pick(rng, [f" while {meta['background']} in the background", f" over {meta['background']}"])
    audiocaps = _cap(ac)

    tags: list[str] = []
    for e in events:
        for t in e.get("tags", [e["label"]]):
            if t not in tags:
                tags.append(t)
    if meta.get("background_tag"):
        tags.append(meta["background_tag"])
    audiosetcaps = ", ".join(rng.permutation(tags))

    place = _pick(rng, ["in a quiet room", "outdoors", "in a video game", "in a small space", "close to the microphone",
                        "in the distance", "in an empty hall"])
    clotho = _pick(rng, [f"{ac} {place}", f"in this recording, {ac}", f"{ac}, and the sound is {_pick(rng, ['sharp', 'dull', 'loud', 'soft', 'crisp'])}",
                         f"{ac}; the sound fades out at the end"])
    return [audiocaps, audiosetcaps, _cap(clotho)], ["audiocaps", "audiosetcaps", "clotho"]


def captions_for(domain: str, meta: dict, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    if domain == "speech":
        return speech_captions(meta, rng)
    if domain == "music":
        return music_captions(meta, rng)
    return sound_captions(meta, rng)
