"""The MiniStew data card: what is in a build, how much of it, how varied its captions are, and under what licences."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from audiolp.data.schema import cut_domain, load_manifest
from audiolp.data.tasks import load_task_registry, load_task_split
from audiolp.data.text_stats import caption_statistics

# Licences of the PyPI-side sources (from each project's metadata / bundled licence file).
PYPI_SOURCES = {
    "espeak-ng (espeakng_loader wheel)": "GPL-3.0-or-later (espeak-ng)",
    "music21 corpus": "music21 is BSD-3-Clause; its corpus is distributed with the encoders' permission "
                      "(music21/corpus/license.txt)",
    "TimGM6mb.sf2 (pretty_midi)": "GPL-2 (Debian timgm6mb-soundfont); bundled in pretty_midi (MIT)",
    "tinysoundfont": "MIT",
}
# Which sub-sources come from which Debian package (for the licence column).
SOURCE_PACKAGES = {
    "ministew/espeak_tts": ["espeak-ng (espeakng_loader wheel)", "iso-codes"],
    "ministew/tuxpaint_speech": ["tuxpaint-stamps-default"],
    "ministew/klettres": ["klettres-data"],
    "ministew/hedgewars_voices": ["hedgewars-data"],
    "ministew/music21_render": ["music21 corpus", "TimGM6mb.sf2 (pretty_midi)", "musescore-general-soundfont-small",
                                "fluid-soundfont-gm"],
    "ministew/drum_hits": ["hydrogen-drumkits", "TimGM6mb.sf2 (pretty_midi)", "musescore-general-soundfont-small",
                           "fluid-soundfont-gm"],
    "ministew/drum_loops": ["hydrogen-drumkits", "TimGM6mb.sf2 (pretty_midi)", "musescore-general-soundfont-small",
                            "fluid-soundfont-gm"],
    "ministew/sfx_mixtures": ["(constituent effect packages)"],
    "ministew/freedesktop_sfx": ["sound-theme-freedesktop"], "ministew/soundicons_sfx": ["sound-icons"],
    "ministew/minetest_sfx": ["minetest-data"], "ministew/tuxpaint_sfx": ["tuxpaint-data"],
    "ministew/wesnoth_sfx": ["wesnoth-1.16-data"], "ministew/hedgewars_sfx": ["hedgewars-data"],
    "ministew/tuxpaint_stamps_sfx": ["tuxpaint-stamps-default"],
}


# Planner counters (build_info.json: skipped_sources) -> words for the card.
HELD_OUT_COUNTS = {
    "sfx_duplicate_contents": "effect files identical to another effect file",
    "hedgewars_voice_duplicates": "Hedgewars voice files identical to another",
    "tuxpaint_speech_duplicates": "stamp descriptions identical to another",
    "drum_loops_without_sounds": "drum loops not made (no pretraining sample for the pattern's drums)",
    "pretrain_clips_sharing_task_content": "pretraining clips sharing content with a task",
}


def _table(heads, rows) -> str:
    out = ["| " + " | ".join(heads) + " |", "|" + "|".join("---" for _ in heads) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def data_card(out_dir, info: dict | None = None) -> str:
    """Markdown card for a built MiniStew folder (pretraining cuts + MiniBench tasks)."""
    out_dir = Path(out_dir)
    if info is None:
        p = out_dir / "build_info.json"
        info = json.loads(p.read_text()) if p.exists() else {}
    pre = load_manifest(out_dir / "cuts.jsonl.gz").to_eager()
    registry = load_task_registry(out_dir / "tasks.json")
    task_cuts = {name: {s: load_task_split(spec, s, out_dir) for s in spec.splits} for name, spec in registry.items()}

    all_cuts = list(pre) + [c for t in task_cuts.values() for cs in t.values() for c in cs]
    seen, uniq = set(), []
    for c in all_cuts:  # retrieval shares no clips with other tasks, but be safe against double counting
        if c.id not in seen:
            seen.add(c.id)
            uniq.append(c)
    by_dom = defaultdict(lambda: [0, 0.0])
    for c in uniq:
        d = by_dom[cut_domain(c)]
        d[0] += 1
        d[1] += c.duration
    total_n, total_h = len(uniq), sum(c.duration for c in uniq) / 3600

    stats = caption_statistics(pre)
    debs = info.get("debian_packages", {})
    lic = {**PYPI_SOURCES, **{p: f"{d['licence']} (Debian {p} {d['version']})" for p, d in debs.items()}}

    lines = [f"# MiniStew data card (profile `{info.get('profile', '?')}`, seed {info.get('seed', '?')})", ""]
    lines.append(f"{total_n:,} clips, {total_h:.2f} h in all (pretraining: {len(pre):,} clips, "
                 f"{sum(c.duration for c in pre) / 3600:.2f} h; MiniBench tasks: the rest). 16 kHz mono FLAC, 1-10 s.")
    if info.get("seconds"):
        lines.append(f"Build: {info['seconds']['total']} s with {info.get('jobs')} jobs; "
                     f"{info.get('n_failed', 0)} clips failed and were skipped.")
    lines += ["", "## Domains (all clips)", "",
              _table(["domain", "clips", "hours", "share of clips", "share of hours"],
                     [[d, f"{n:,}", f"{s / 3600:.2f}", f"{n / total_n:.1%}", f"{s / 3600 / total_h:.1%}"]
                      for d, (n, s) in sorted(by_dom.items())])]
    rows = []
    for src, e in stats["sources"].items():
        pk = SOURCE_PACKAGES.get(src, [])
        lic_txt = "; ".join(f"{p}: {lic[p]}" for p in pk if p in lic) or "licences of the constituent packages"
        rows.append([src, f"{e['clips']:,}", f"{e['hours']:.2f}", e["vocab_size"], f"{e['distinct_1']:.3f}",
                     f"{e['distinct_2']:.3f}", lic_txt])
    o = stats["overall"]
    rows.append(["**all pretraining**", f"{o['clips']:,}", f"{o['hours']:.2f}", o["vocab_size"], f"{o['distinct_1']:.3f}",
                 f"{o['distinct_2']:.3f}", ""])
    lines += ["", "## Pretraining sources (cuts.jsonl.gz)", "",
              _table(["source", "clips", "hours", "caption vocab", "Distinct-1", "Distinct-2", "licence"], rows)]
    trows = []
    for name, spec in registry.items():
        sizes = " / ".join(f"{len(task_cuts[name].get(s, [])):,}" for s in ("train", "val", "test"))
        trows.append([name, spec.domain, spec.kind, spec.metric, len(spec.labels) or "-", sizes, spec.description])
    lines += ["", "## MiniBench tasks (held out: no clip id, no source-file content and no drum sample is shared with pretraining)", "",
              _table(["task", "domain", "kind", "metric", "classes", "train / val / test", "how it generalises"], trows)]
    lines += ["", "## Licences of the sources used", "", _table(["source", "licence"], sorted(lic.items()))]
    skipped = info.get("skipped_sources") or {}
    unnamed = {k: v for k, v in skipped.items() if k.startswith("sfx:")}
    if unnamed:
        lines += ["", "Effect files skipped because their names fit no category: "
                  + ", ".join(f"{k} {v}" for k, v in sorted(unnamed.items()))]
    held = {k: v for k, v in skipped.items() if not k.startswith("sfx:")}
    if held:
        lines += ["", "Left out to keep tasks held out (one item per file content; drum loops only on pretraining "
                  "samples; pretraining clips sharing content with a task): "
                  + ", ".join(f"{HELD_OUT_COUNTS.get(k, k)} {v}" for k, v in sorted(held.items()))]
    return "\n".join(lines) + "\n"
