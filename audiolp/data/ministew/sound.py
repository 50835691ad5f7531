"""Environmental sound: real effects from Debian game/theme packages, categorised from their file names, plus
augmented copies and mixtures with exact event onsets."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from audiolp.data.ministew.audio import load_audio, trim_silence
from audiolp.data.schema import SAMPLING_RATE

# (category, filename regex, phrase templates, tags). The first matching rule wins; order matters.
# "{m}" in a phrase is replaced by a material word when the file name names one.
SFX_RULES = [
    ("footsteps", r"footstep|steps", ["footsteps on {m}", "someone walks on {m}", "a person steps across {m}"],
     ["footsteps", "walking"]),
    ("glass breaking", r"break_glass|glass.?break|shatter", ["glass shatters", "a glass pane breaks"],
     ["glass", "shatter"]),
    ("water", r"water|splash|droplet|bubble|liquid|waves?\b|lava",
     ["water splashes", "liquid bubbles and gurgles", "water drips and splashes"], ["water", "splash"]),
    ("fire", r"fire|flame|torch|campfire|burning|fuse|blowtorch|flamethrower",
     ["a fire crackles", "flames burn and roar", "fire crackles and hisses"], ["fire", "crackling"]),
    ("explosion", r"explo|tnt|grenade|mineimpact|airmine|bomb|cave-in|mortar|fireworks|rumble",
     ["an explosion booms", "something explodes loudly", "a blast rumbles"], ["explosion", "boom"]),
    ("door", r"door|gate|chest", ["a door opens and closes", "a door creaks", "a lid is opened"], ["door", "creak"]),
    ("digging", r"dig|dug|place_node|pickhammer|drill|hammer|mallet|saw\b|tool",
     ["tools strike hard material", "someone digs and hammers", "a tool hits stone"], ["tools", "digging", "knock"]),
    ("gunshot", r"gun|shot|sniper|crossbow|thunderstick|dragonstick|shotgun|\bbow\b|bow-|sling",
     ["a weapon fires", "a gunshot rings out", "a projectile is launched"], ["gunshot", "weapon"]),
    ("blade", r"sword|knife|axe|hatchet|dagger|mace|club|flail|spear|whip|scissors|claws|baseballbat",
     ["a blade swishes through the air", "a weapon swings and hits", "metal swishes and clanks"],
     ["swoosh", "impact"]),
    ("animal", r"wolf|growl|gryphon|horse|drake|yeti|tusker|bat-|bat_|\bbat\b|animals|bee\b|cat\b|frog|pig|cow|bird|canary|cockchafer|duck",
     ["an animal calls", "an animal growls and cries", "a creature makes noises"], ["animal"]),
    ("monster", r"ogre|troll|goblin|orc|naga|skeleton|zombie|wose|lich|ghoul|hiss|mermen|mermaid|hell_",
     ["a monster growls", "a creature groans in pain", "a monster roars"], ["monster", "growl"]),
    ("human grunt", r"human|dwarf|elf|groan|ugg|ooff|laugh|giggle",
     ["a person grunts", "someone groans in pain", "a person cries out"], ["human voice", "grunt"]),
    ("magic", r"magic|heal|lightning|petrified|slowed|entangle|poison|potion|faerie|invulnerable|warp|portal|teleport|sinegun|lasersight|ice_beam|freeze|frozen",
     ["a magical whoosh sounds", "a shimmering spell effect plays", "a sci-fi zap rings out"], ["magic", "whoosh"]),
    ("vehicle", r"cart|plane|ufo|jetpack|ship|engine|vacuum|washing|apollo|rcplane",
     ["an engine hums", "a vehicle rumbles past", "a machine whirs"], ["engine", "machine"]),
    ("instrument note", r"cembalo|klavichord|guitar|piano|trumpet|violoncello|xylofon|cymbaly|percussion-|violin|cello|bassoon|harp\b",
     ["a single instrument note rings out", "a musical instrument plays a short note", "a tone is plucked"],
     ["musical note", "instrument"]),
    ("bell", r"bell|chime|alarm|complete|phone|horn-|fanfare",
     ["a bell rings", "a chime sounds", "a melodic alert chimes"], ["bell", "chime"]),
    ("beep", r"beep|bleep|message|dialog|service|device|login|logout|notification|prompt|receive|join|leave|arrive|timer|countdown|pisk|select|denied|skip|trash|suspend|complete",
     ["an electronic beep sounds", "a computer notification plays", "a short alert tone beeps"],
     ["beep", "alert"]),
    ("click", r"click|keyclick|button|checkbox|slider|shutter|camera|typewriter|stamp|scroll|flip|return|contract|expand",
     ["a mechanical click sounds", "a button clicks", "something clicks and taps"], ["click", "tap"]),
]
MATERIALS = ["wood", "gravel", "snow", "grass", "sand", "metal", "ice", "dirt", "glass", "water", "stone"]
_SKIP = re.compile(r"audio-channel|audio-test|_desc|areyousure|youcannot|tuxok|/voices/|/Music/|/symbols/|/faces/")


def categorize(path: str) -> tuple[str, str, list[str], list[str]] | None:
    """(category, material, phrases, tags) for an effect file, or None when its name fits no rule."""
    name = Path(path).stem.lower()
    hay = name + " " + "/".join(Path(path).parts[-3:-1]).lower()
    if _SKIP.search(str(path)):
        return None
    for cat, pat, phrases, tags in SFX_RULES:
        if re.search(pat, hay):
            mat = next((m for m in MATERIALS if m in name), "the ground")
            return cat, mat, phrases, tags
    return None


# Where effects live in each package (glob patterns under the unpacked root).
SFX_GLOBS = {
    "sound-theme-freedesktop": ["usr/share/sounds/freedesktop/stereo/*.oga"],
    "sound-icons": ["usr/share/sounds/sound-icons/*.wav"],
    "minetest-data": ["usr/share/games/minetest/**/*.ogg"],
    "tuxpaint-data": ["usr/share/tuxpaint/sounds/**/*.wav", "usr/share/tuxpaint/sounds/**/*.ogg"],
    "wesnoth-1.16-data": ["usr/share/games/wesnoth/1.16/data/core/sounds/**/*.ogg",
                          "usr/share/games/wesnoth/1.16/data/core/sounds/**/*.wav",
                          "usr/share/games/wesnoth/1.16/sounds/**/*.ogg", "usr/share/games/wesnoth/1.16/sounds/**/*.wav"],
    "hedgewars-data": ["usr/share/games/hedgewars/Data/Sounds/*.ogg"],
    "tuxpaint-stamps-default": ["usr/share/tuxpaint/stamps/**/*.ogg"],
}
_LANG_SUFFIX = re.compile(r"_[a-z]{2}(_[a-zA-Z]{2})?$")


def sfx_items(pkg: str, root: Path) -> tuple[list[dict], int]:
    """Effects of one package: [{path, pkg, category, material, phrases, tags}], and how many files were skipped."""
    seen, items, skipped = set(), [], 0
    for pat in SFX_GLOBS.get(pkg, []):
        for f in sorted(root.glob(pat)):
            if f in seen or not f.is_file():
                continue
            seen.add(f)
            if pkg == "tuxpaint-stamps-default" and ("_desc" in f.stem or _LANG_SUFFIX.search(f.stem)):
                continue  # spoken descriptions belong to the speech domain
            c = categorize(str(f.relative_to(root)))
            if c is None:
                skipped += 1
                continue
            cat, mat, phrases, tags = c
            items.append({"path": str(f), "pkg": pkg, "category": cat, "material": mat, "phrases": phrases,
                          "tags": tags, "name": f.stem})
    return items, skipped


def event_phrase(item: dict, rng: np.random.Generator) -> str:
    ph = item["phrases"][int(rng.integers(len(item["phrases"])))]
    return ph.replace("{m}", item.get("material") or "the ground")


def gen_sfx(p: dict, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """One effect, optionally speed-perturbed (resampling) and repeated, with a seeded gain."""
    x = trim_silence(load_audio(p["path"]))
    if p.get("speed", 1.0) != 1.0:
        n = max(1, int(round(x.size / p["speed"])))
        x = np.interp(np.linspace(0, x.size - 1, n), np.arange(x.size), x).astype(np.float32)
    reps = int(p.get("repeat", 1))
    if reps > 1:
        gap = np.zeros(int(float(rng.uniform(0.1, 0.6)) * SAMPLING_RATE), np.float32)
        x = np.concatenate([np.concatenate([x * float(rng.uniform(0.6, 1.0)), gap]) for _ in range(reps)])
    return x * float(p.get("gain", 1.0)), {}


def gen_mixture(p: dict, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Place events at ``p['onsets']`` over an optional quiet background; returns exact (label, onset, offset)."""
    total = int(p["duration"] * SAMPLING_RATE)
    x = np.zeros(total, np.float32)
    if p.get("background"):
        bg = trim_silence(load_audio(p["background"]))
        if bg.size:
            reps = int(np.ceil(total / bg.size))
            bg = np.tile(bg, reps)[:total]
            x += bg * (0.12 / (np.abs(bg).max() + 1e-9))
    events = []
    for ev, onset in zip(p["events"], p["onsets"]):
        e = trim_silence(load_audio(ev["path"]))
        i = int(onset * SAMPLING_RATE)
        e = e[: max(0, total - i)]
        if e.size == 0:
            continue
        e = e / (np.abs(e).max() + 1e-9) * float(rng.uniform(0.5, 0.9))
        x[i:i + e.size] += e
        events.append([ev["category"], round(onset, 3), round(onset + e.size / SAMPLING_RATE, 3)])
    return x, {"events_timed": events}
