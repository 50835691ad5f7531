"""Open-form QA pairs from the metadata of a task registry's HELD-OUT clips (MiniBench), and their answer normaliser.

Every question comes from a fact stored with a clip (``supervision.custom['meta']`` and ``custom['domain']``):

    type        fact                                          answers
    domain      custom['domain']                              speech | music | sound
    gender      meta['gender']                                male | female
    language    meta['lang'] (as its English name)            english | french | ...
    pitch       meta['pitch_level']                           low | medium | high
    rate        meta['rate_level']                            slow | normal | fast
    character   meta['voice_pack'] (speaker_id's voices)      pirate | robot | ...
    instrument  meta['families'], one family only             piano | brass | ... (not the drum clips)
    drum        meta['instruments'] of a drum-hits clip       kick | snare | hi-hat | tom | cymbal
    event       meta['events'], one distinct label            footsteps | water | ...
    count       len(meta['events_timed'])                     2 | 3 | ...

Each type has several phrasings (``TEMPLATES``); a clip's phrasing is a seeded choice of (seed, clip id, type), so the
same clip is asked the same way in every run with that seed. Only the clips of the registry's task splits are used
(``custom['split']`` "task:...", never "pretrain"); train questions come from the tasks' train splits, test questions
from their test splits, and a clip in any test split never yields a train question. The manifest ``cuts.jsonl.gz``
beside the registry (the pretraining corpus) is checked to share no clip with them.

A QA manifest is the clips' cut manifest with ``custom['qa'] = [{"type", "question", "answer"}, ...]`` (one entry
per question type the clip answers), which the trainer hands to the ``audio_qa`` objective as ``batch['qa']``.
"""
from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from pathlib import Path

from lhotse import CutSet
from lhotse.utils import fastcopy

from audiolp.data.ministew.captions import LANG_NAMES
from audiolp.data.tasks import load_task_registry, load_task_split

QA_FIELD = "qa"

TEMPLATES: dict[str, tuple[str, ...]] = {
    "domain": ("Is this recording speech, music or a sound effect?",
               "What kind of audio is this: speech, music or sound?",
               "Which best describes this clip: speech, music or a sound?"),
    "gender": ("Is the speaker male or female?",
               "What is the gender of the voice?",
               "Is this a man or a woman speaking?"),
    "language": ("What language is being spoken?",
                 "Which language does the speaker use?",
                 "In what language is this speech?"),
    "pitch": ("Is the voice low, medium or high pitched?",
              "What is the pitch level of the speaker's voice?",
              "How high is the voice: low, medium or high?"),
    "rate": ("Is the speech slow, normal or fast?",
             "How fast does the speaker talk?",
             "What is the speaking rate: slow, normal or fast?"),
    "character": ("Which character voice is speaking?",
                  "What character does this voice belong to?",
                  "Who is speaking, by character?"),
    "instrument": ("What family of instrument is playing?",
                   "Which instrument family do you hear?",
                   "What kind of instrument plays this music?"),
    "drum": ("Which drum is being played?",
             "What drum do you hear?",
             "Which percussion instrument plays these hits?"),
    "event": ("What sound event do you hear?",
              "What is making this sound?",
              "Which sound is this?"),
    "count": ("How many sound events are there?",
              "How many distinct sounds occur in this clip?",
              "Count the sound events in this clip."),
}
QUESTION_TYPES = tuple(TEMPLATES)


# ------------------------------------------------------------------------------------------------ normaliser
_ARTICLES = frozenset({"a", "an", "the"})
# Word -> canonical word (both the reference and the prediction go through it, so a synonym maps onto the label).
_WORD_SYNONYMS = {
    "man": "male", "men": "male", "masculine": "male", "boy": "male",
    "woman": "female", "women": "female", "feminine": "female", "girl": "female", "lady": "female",
    "mid": "medium", "middle": "medium", "moderate": "medium", "average": "medium", "normal": "medium",
    "deep": "low", "quick": "fast", "rapid": "fast", "sounds": "sound", "noise": "sound",
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7",
    "eight": "8", "nine": "9", "ten": "10", "once": "1", "twice": "2",
}
# Multi-word phrases that mean one canonical word.
_PHRASES = ((("hi", "hat"), "hihat"), (("sound", "effects"), "sound"), (("sound", "effect"), "sound"),
            (("bass", "drum"), "kick"))
# Words that carry no answer ("a high pitched voice" -> "high"); dropped only when something else remains.
_FILLER = frozenset({"voice", "voices", "voiced", "speaker", "speaking", "speech", "pitch", "pitched", "drum", "drums",
                     "instrument", "instruments", "family", "language", "it", "its", "is", "this", "that", "answer",
                     "pace", "speed", "rate", "tempo", "person", "talker", "event", "events", "clip", "there",
                     "are", "of", "in", "i", "hear", "sounding", "character", "plays", "playing", "spoken"})
_NON_WORD = re.compile(r"[^\w\s]|_")


def normalize_answer(text: str) -> str:
    """Lower-cased, punctuation and articles stripped, synonyms mapped, filler words dropped:
    "A man." -> "male", "High-pitched voice" -> "high", "Two" -> "2", "the hi-hat" -> "hihat"."""
    s = unicodedata.normalize("NFKC", str(text)).lower()
    words = _NON_WORD.sub(" ", s.replace("'s", "")).split()
    out: list[str] = []
    i = 0
    while i < len(words):
        for phrase, canon in _PHRASES:
            if tuple(words[i:i + len(phrase)]) == phrase:
                out.append(canon)
                i += len(phrase)
                break
        else:
            w = words[i]
            if w not in _ARTICLES:
                out.append(_WORD_SYNONYMS.get(w, w))
            i += 1
    kept = [w for w in out if w not in _FILLER]
    return " ".join(kept or out)


def exact_match(question: str, reference: str, prediction: str) -> float:
    """The default judge: 1.0 when the normalised prediction equals the normalised reference."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


def contains_match(question: str, reference: str, prediction: str) -> float:
    """A lenient judge: 1.0 when the normalised reference occurs as whole words in the normalised prediction."""
    ref, pred = normalize_answer(reference), normalize_answer(prediction)
    return float(bool(ref) and f" {ref} " in f" {pred} ")


JUDGES = {"exact_match": exact_match, "contains": contains_match}


# ------------------------------------------------------------------------------------------------ QA pairs
def _seeded_index(n: int, *key) -> int:
    h = hashlib.blake2b("|".join(map(str, key)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") % n


def clip_facts(custom: dict) -> dict[str, str]:
    """{question type: answer} for the facts a clip's supervision ``custom`` holds (see the module docstring)."""
    meta = custom.get("meta") or {}
    facts: dict[str, str] = {}
    if custom.get("domain") in ("speech", "music", "sound"):
        facts["domain"] = custom["domain"]
    if meta.get("gender") in ("male", "female"):
        facts["gender"] = meta["gender"]
    lang = str(meta.get("lang", "")).lower()
    if lang in LANG_NAMES:
        facts["language"] = LANG_NAMES[lang].lower()
    if meta.get("pitch_level") in ("low", "medium", "high"):
        facts["pitch"] = meta["pitch_level"]
    if meta.get("rate_level") in ("slow", "normal", "fast"):
        facts["rate"] = meta["rate_level"]
    if meta.get("voice_pack"):
        facts["character"] = str(meta["voice_pack"]).lower()
    drums = meta.get("genre") == "drum hits"
    if drums and len(set(meta.get("instruments") or [])) == 1:
        facts["drum"] = meta["instruments"][0]
    families = set(meta.get("families") or [])
    if not drums and len(families) == 1:
        facts["instrument"] = families.pop()
    labels = {e.get("label") for e in meta.get("events") or [] if isinstance(e, dict)}
    if len(labels) == 1 and None not in labels:
        facts["event"] = labels.pop()
    if meta.get("events_timed"):
        facts["count"] = str(len(meta["events_timed"]))
    return facts


def clip_qa(clip_id: str, custom: dict, seed: int = 0, types: tuple[str, ...] | None = None) -> list[dict]:
    """The clip's QA pairs [{"type", "question", "answer"}], one per question type it answers (in ``types``)."""
    out = []
    for qtype, answer in clip_facts(custom).items():
        if types is not None and qtype not in types:
            continue
        phrasings = TEMPLATES[qtype]
        out.append({"type": qtype, "question": phrasings[_seeded_index(len(phrasings), seed, clip_id, qtype)],
                    "answer": answer})
    return out


def _task_clips(registry_path: Path, split: str) -> dict[str, object]:
    """Every clip of the registry's ``split`` manifests, by id (a clip in several tasks once)."""
    out: dict[str, object] = {}
    for spec in load_task_registry(registry_path).values():
        if split not in spec.splits:
            continue
        for cut in load_task_split(spec, split, registry_path.parent):
            tag = str((cut.supervisions[0].custom or {}).get("split", "")) if cut.supervisions else ""
            if tag == "pretrain":
                raise ValueError(f"{registry_path}: task {spec.name!r} split {split!r} holds the pretraining clip "
                                 f"{cut.id!r}; QA questions come from held-out clips only. Rebuild the task data")
            out.setdefault(cut.id, cut)
    return out


def qa_cuts(registry_path: str | os.PathLike, split: str, seed: int = 0, types: tuple[str, ...] | None = None,
            check_pretraining: bool = True) -> CutSet:
    """The held-out clips of the registry's ``split`` with their QA pairs in ``custom['qa']`` (clips without any
    question left out). ``split="train"`` leaves out every clip that is also in a test split."""
    registry_path = Path(registry_path)
    unknown = sorted(set(types or ()) - set(QUESTION_TYPES))
    if unknown:
        raise ValueError(f"unknown QA question type(s) {unknown}; use some of {list(QUESTION_TYPES)}")
    clips = _task_clips(registry_path, split)
    if split != "test":
        test_ids = set(_task_clips(registry_path, "test"))
        clips = {k: v for k, v in clips.items() if k not in test_ids}
    pretrain = registry_path.parent / "cuts.jsonl.gz"
    if check_pretraining and pretrain.exists():
        shared = sorted(set(clips) & {c.id for c in CutSet.from_file(pretrain)})
        if shared:
            raise ValueError(f"{registry_path}: {len(shared)} {split} task clip(s) are also in the pretraining "
                             f"manifest {pretrain} (e.g. {shared[:3]}); QA needs held-out clips")
    out = []
    for cid in sorted(clips):
        cut = clips[cid]
        custom = dict(cut.supervisions[0].custom or {})
        pairs = clip_qa(cid, custom, seed=seed, types=types)
        if not pairs:
            continue
        sup = cut.supervisions[0].with_custom(QA_FIELD, pairs)
        out.append(fastcopy(cut, supervisions=[sup] + list(cut.supervisions[1:])))
    if not out:
        raise ValueError(f"{registry_path}: no {split} clip answers any QA question type "
                         f"{list(types or QUESTION_TYPES)}; the clips' custom['meta'] holds none of their facts")
    return CutSet.from_cuts(out)


def write_qa_manifests(registry_path: str | os.PathLike, out_dir: str | os.PathLike, seed: int = 0,
                       types: tuple[str, ...] | None = None) -> dict[str, Path]:
    """Write ``out_dir/{train,test}.jsonl.gz`` (see :func:`qa_cuts`); returns {split: path}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split in ("train", "test"):
        path = out_dir / f"{split}.jsonl.gz"
        tmp = out_dir / f".{split}.partial.jsonl.gz"
        qa_cuts(registry_path, split, seed=seed, types=types).to_file(tmp)
        os.replace(tmp, path)
        paths[split] = path
    return paths


def qa_pairs(cut) -> list[dict]:
    """The QA pairs a QA-manifest cut carries (``custom['qa']``)."""
    return list((cut.supervisions[0].custom or {}).get(QA_FIELD) or []) if cut.supervisions else []
