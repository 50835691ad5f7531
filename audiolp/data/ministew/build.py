"""Build MiniStew: plan -> make clips in parallel units (each with a done marker) -> write manifests atomically.

Layout of ``out_dir``::

    audio/<domain>/<clip id>.flac     16 kHz mono, 1-10 s
    cuts.jsonl.gz                     pretraining cuts (CaptionStew schema); never holds task clips
    tasks.json                        MiniBench task registry (audiolp.data.tasks)
    tasks/<task>/{train,val,test}.jsonl.gz
    CARD.md, build_info.json          data card and build facts
    .units/<unit>.json                per-unit done markers (clip records), so a rebuild skips finished work
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

import numpy as np
from lhotse import AudioSource, Recording
from tqdm import tqdm

from audiolp.data.ministew import music, sound, speech
from audiolp.data.ministew.audio import fit_length, normalize, write_flac
from audiolp.data.ministew.captions import captions_for
from audiolp.data.ministew.plan import PROFILES, SPLITS, Planner, ProfileConfig, stable_hash
from audiolp.data.schema import SAMPLING_RATE, make_caption_cut, save_manifest
from audiolp.data.tasks import TaskSpec, write_task_registry

BUILD_VERSION = "ministew-2"  # 2: held-out pools by content / drum samples
GENERATORS = {
    "espeak": speech.gen_espeak,
    "file": speech.gen_file,
    "score": music.gen_score,
    "drum_hits": music.gen_drum_hits,
    "drum_loop": music.gen_drum_loop,
    "sfx": sound.gen_sfx,
    "mixture": sound.gen_mixture,
}
UNIT_SIZE = 40


def code_fingerprint() -> str:
    """Hash of the MiniStew sources: a finished build made by other code is not taken as up to date."""
    h = hashlib.sha1()
    for f in sorted(Path(__file__).parent.glob("*.py")):
        if f.name not in ("card.py", "__init__.py"):  # these never change a clip
            h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:16]


def _json_hash(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _atomic_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(obj, ensure_ascii=False, sort_keys=True))
    os.replace(tmp, path)


def make_clip(spec: dict, out_dir: Path, seed: int) -> dict:
    """Generate one clip's audio, write it as FLAC and return its record (captions, labels, metadata)."""
    h = stable_hash(spec["id"])
    rng = np.random.default_rng([seed, h % 2 ** 32, 0])
    x, extra = GENERATORS[spec["gen"]](spec["p"], rng)
    if x.size == 0 or float(np.sqrt(np.mean(x ** 2))) < 1e-5:
        raise ValueError("generated audio is silent")
    x, _ = fit_length(x, rng)
    x = normalize(x, peak_db=float(rng.uniform(-14, -1)))
    # A faint noise floor (-75..-55 dBFS), as in any real recording: padding is never digital silence, so
    # clip statistics do not hinge on how much of a clip is padding.
    x = x + (rng.standard_normal(x.size) * 10 ** (float(rng.uniform(-75, -55)) / 20)).astype(np.float32)
    rel = f"audio/{spec['domain']}/{spec['id']}.flac"
    n = write_flac(out_dir / rel, x)
    meta = {k: v for k, v in {**spec["meta"], **extra}.items() if v is not None}
    caps, styles = captions_for(spec["domain"], meta, np.random.default_rng([seed, h % 2 ** 32, 1]))
    rec = {"id": spec["id"], "path": rel, "num_samples": n, "captions": caps, "caption_styles": styles,
           "source": spec["source"], "domain": spec["domain"], "labels": spec["labels"], "assign": spec["assign"],
           "origins": spec["origins"], "meta": meta}
    if "events_timed" in extra:
        rec["events"] = extra["events_timed"]
    return rec


def _run_unit(args) -> tuple[str, int, int]:
    out_dir, unit_id, specs, seed, unit_hash = args
    out_dir = Path(out_dir)
    records, failed = [], []
    for spec in specs:
        try:
            records.append(make_clip(spec, out_dir, seed))
        except Exception as e:  # one bad source file must not sink the build: skip it and count it
            failed.append({"id": spec["id"], "gen": spec["gen"], "error": f"{type(e).__name__}: {e}"[:300]})
    _atomic_json(out_dir / ".units" / f"{unit_id}.json", {"hash": unit_hash, "records": records, "failed": failed})
    return unit_id, len(records), len(failed)


def _units(specs: list[dict], seed: int) -> list[tuple[str, list[dict], str]]:
    by_gen = defaultdict(list)
    for s in specs:
        by_gen[s["gen"]].append(s)
    units = []
    # Slow generators first so the pool's last units are short ones (better load balance on 2 cores).
    order = ["score", "mixture", "drum_loop", "file", "sfx", "espeak", "drum_hits"]
    for gen in sorted(by_gen, key=lambda g: order.index(g) if g in order else 99):
        lst = by_gen[gen]
        if gen == "score":  # clips of one score share a unit, so the score is parsed once per worker
            lst = sorted(lst, key=lambda s: (s["p"]["score"], s["id"]))
        for k in range(0, len(lst), UNIT_SIZE):
            chunk = lst[k:k + UNIT_SIZE]
            # The code fingerprint is part of a unit's identity: changed generators or captions redo the unit.
            units.append((f"{gen}-{k // UNIT_SIZE:04d}", chunk, _json_hash([BUILD_VERSION, code_fingerprint(), seed, chunk])))
    return units


def _recording(rec: dict, out_dir: Path) -> Recording:
    path = out_dir / rec["path"]
    n = rec["num_samples"]
    return Recording(id=rec["id"], sources=[AudioSource(type="file", channels=[0], source=str(path))],
                     sampling_rate=SAMPLING_RATE, num_samples=n, duration=n / SAMPLING_RATE)


def record_to_cut(rec: dict, out_dir: Path):
    extra = {"meta": rec["meta"], "caption_styles": rec["caption_styles"], "origins": rec["origins"],
             "split": rec["assign"]}
    if "events" in rec:
        extra["events"] = rec["events"]
    return make_caption_cut(rec["id"], _recording(rec, out_dir), rec["captions"], rec["source"], rec["domain"],
                            labels=rec["labels"], extra=extra)


def build_ministew(out_dir, profile: str | ProfileConfig = "tiny", seed: int = 0, cache_dir=None,
                   jobs: int | None = None, progress: bool = True) -> Path:
    """Build (or finish building) MiniStew into ``out_dir``; returns ``out_dir`` (absolute).

    ``profile``: "tiny" (tests: <= 600 clips, small Debian packages), "full" (>= 12,000 clips, >= 15 h) or a
    custom ``ProfileConfig``. Offline apart from Debian package downloads (cached in ``cache_dir``, default
    ``$AUDIOLP_DEB_CACHE`` or ``~/.cache/audiolp/debian``). Same profile + seed -> same corpus. A finished
    build is detected from ``build_info.json`` and returned at once; an interrupted one resumes.
    Manifests point at the FLAC files by absolute path: move the folder and rebuild (it is fast: only the
    manifests are rewritten when the unit markers are still valid).
    """
    if isinstance(profile, ProfileConfig):
        cfg = profile
    elif profile in PROFILES:
        cfg = PROFILES[profile]
    else:
        raise ValueError(f"profile={profile!r}; use one of {sorted(PROFILES)} or pass a ProfileConfig")
    out_dir = Path(out_dir).resolve()
    info_path = out_dir / "build_info.json"
    key = {"version": BUILD_VERSION, "profile": cfg.name, "seed": seed, "code": code_fingerprint(),
           "config": _json_hash(asdict(cfg)), "out_dir": str(out_dir)}
    if info_path.exists():
        info = json.loads(info_path.read_text())
        if all(info.get(k) == v for k, v in key.items()):
            # The card's code is not part of the fingerprint (it changes no clip): refresh a stale CARD.md.
            from audiolp.data.ministew.card import data_card

            card = data_card(out_dir, info=info)
            card_path = out_dir / "CARD.md"
            if not card_path.exists() or card_path.read_text() != card:
                card_path.write_text(card)
            return out_dir
    t0 = time.time()
    planner = Planner(cfg, seed, cache_dir)
    specs = planner.plan()
    t_plan = time.time() - t0
    (out_dir / ".units").mkdir(parents=True, exist_ok=True)
    units = _units(specs, seed)
    todo = []
    for uid, chunk, uh in units:
        marker = out_dir / ".units" / f"{uid}.json"
        if marker.exists():
            try:
                if json.loads(marker.read_text()).get("hash") == uh:
                    continue
            except json.JSONDecodeError:
                pass  # a damaged marker: redo the unit
        todo.append((str(out_dir), uid, chunk, seed, uh))
    jobs = jobs or min(os.cpu_count() or 1, 8)
    if todo:
        bar = tqdm(total=len(todo), desc=f"MiniStew {cfg.name}: units", disable=not progress)
        # Soundfonts are decoded once here (loaded, never rendered) and shared by the forked workers.
        music.preload_soundfonts({sp["p"]["sf"] for t in todo for sp in t[2] if "sf" in sp["p"]})
        # Every unit runs in a fresh fork of this process (maxtasksperchild=1): espeak-ng and tinysoundfont keep
        # state from one clip to the next, so a unit must start from the same state in every build to give the
        # same bytes however units are scheduled. If this process has itself spoken through espeak-ng, its
        # library state is no longer pristine and forks would inherit it: fall back to (slower) spawn.
        method = "spawn" if speech.espeak_used_in_process() else "fork"
        with mp.get_context(method).Pool(max(1, jobs), maxtasksperchild=1) as pool:
            for _ in pool.imap_unordered(_run_unit, todo):
                bar.update()
        bar.close()
    t_gen = time.time() - t0 - t_plan

    records, failed = [], []
    valid_units = set()
    for uid, chunk, uh in units:
        data = json.loads((out_dir / ".units" / f"{uid}.json").read_text())
        records += data["records"]
        failed += data["failed"]
        valid_units.add(f"{uid}.json")
    for stale in (out_dir / ".units").glob("*.json"):
        if stale.name not in valid_units:
            stale.unlink()
    order = {s["id"]: i for i, s in enumerate(specs)}
    records.sort(key=lambda r: order[r["id"]])

    by_assign = defaultdict(list)
    for r in records:
        by_assign[r["assign"]].append(record_to_cut(r, out_dir))
    save_manifest(by_assign.get("pretrain", []), out_dir / "cuts.jsonl.gz")
    specs_out = {}
    for name, t in planner.tasks.items():
        splits = {}
        for split in SPLITS:
            cuts = by_assign.get(f"task:{name}:{split}", [])
            if cuts:
                rel = f"tasks/{name}/{split}.jsonl.gz"
                save_manifest(cuts, out_dir / rel)
                splits[split] = rel
        if splits:
            specs_out[name] = TaskSpec(name=name, kind=t["kind"], metric=t["metric"], labels=t["labels"], splits=splits,
                                       description=t["description"], domain=t["domain"])
    write_task_registry(specs_out, out_dir / "tasks.json")

    licences = {p: {"version": d.version, "licence": d.licence()} for p, d in planner.debs.items()}
    info = {**key, "n_clips": len(records), "n_failed": len(failed), "failed": failed[:50],
            "skipped_sources": planner.skipped, "debian_packages": licences, "jobs": jobs,
            "seconds": {"plan": round(t_plan, 1), "generate": round(t_gen, 1), "total": round(time.time() - t0, 1)}}
    from audiolp.data.ministew.card import data_card

    (out_dir / "CARD.md").write_text(data_card(out_dir, info=info))
    _atomic_json(info_path, info)  # written last: its presence means the build is complete
    return out_dir
