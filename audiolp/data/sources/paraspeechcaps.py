"""ParaSpeechCaps: the HF dataset ``ajd12342/paraspeechcaps`` as downloaded, ``data/<split>-XXXXX-of-YYYYY.parquet``
(splits train_base, train_scaled, dev, holdout; ``.jsonl`` or ``.csv`` exports with the same names are read
too), with the audio of the original corpora (VoxCeleb1/2, EARS, Expresso, Emilia) on disk.

Columns used: ``source`` (original corpus), ``relative_audio_path`` (older revisions: ``audio_path``),
``text_description`` (list of speaking-style captions), ``intrinsic_tags`` and ``situational_tags``
(-> labels), ``transcription``, ``speakerid``, ``gender``, ``accent``, ``pitch``, ``speaking_rate``
(-> custom fields). The audio file is ``audio_roots[source] / relative_audio_path`` when a root is given for
that corpus, else ``audio_root / relative_audio_path`` or ``audio_root / source / relative_audio_path``.
This is the mapping the dataset's own instructions give (one root per source corpus: ``${voxceleb_root}`` holding
``voxceleb1/`` and ``voxceleb2/``, ``${expresso_root}``, ``${ears_root}``, ``${emilia_root}`` holding ``EN/``; the
real path is the root joined with ``relative_audio_path``), e.g.
``--option paraspeechcaps.audio_roots='{"voxceleb": "/data/vox", "emilia": "/data/emilia"}'``. A path whose file was
re-encoded (VoxCeleb2 ``.m4a`` converted to ``.wav``) is found under its other extension.

Only the training splits are read by default; dev/holdout are ParaSpeechCaps' own evaluation splits.
Parquet/JSONL rows have no text lines: malformed rows are reported as ``file:<row number>`` (1-based).
"""
from __future__ import annotations

import ast
import csv
import json
import re
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from audiolp.data.sources.common import (
    SourceLoad,
    add_clip,
    no_expected_files,
    progress,
    require_root,
    resolve_audio,
)

NAME = "paraspeechcaps"
DOMAIN = "speech"
SPLITS = ("train_base", "train_scaled", "dev", "holdout")
TRAIN_SPLITS = ("train_base", "train_scaled")
EXTENSIONS = (".parquet", ".jsonl", ".csv")
PATH_COLUMNS = ("relative_audio_path", "audio_path")
EXTRA_COLUMNS = ("transcription", "speakerid", "gender", "accent", "pitch", "speaking_rate")
_SHARD_RE = re.compile(r"^(?P<split>[A-Za-z0-9_]+?)(?:-\d{5}-of-\d{5})?$")


def _as_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        v = value.strip()
        if v.startswith("["):
            try:
                parsed = json.loads(v)
            except json.JSONDecodeError:
                try:
                    parsed = ast.literal_eval(v)
                except (ValueError, SyntaxError):
                    parsed = [v]
            return [str(x) for x in parsed] if isinstance(parsed, (list, tuple)) else [str(parsed)]
        return [v] if v else []
    if isinstance(value, (list, tuple)):
        return [str(x) for x in value if x is not None]
    if hasattr(value, "tolist"):
        return [str(x) for x in value.tolist()]
    return [str(value)]


def _rows(path: Path, out: SourceLoad) -> Iterator[tuple[str, dict]]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as e:
            raise ImportError(
                f"{path}: reading ParaSpeechCaps parquet files needs pyarrow; `pip install pyarrow` "
                f"(or export the split to .jsonl)"
            ) from e
        n = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
            for row in batch.to_pylist():
                n += 1
                yield f"{path}:{n}", row
    elif suffix == ".jsonl":
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    out.bad(f"{path}:{i}", f"invalid JSON ({e.msg})")
                    continue
                if not isinstance(row, dict):
                    out.bad(f"{path}:{i}", "row is not a JSON object")
                    continue
                yield f"{path}:{i}", row
    else:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            for row in reader:
                where = f"{path}:{reader.line_num}"
                if None in row or any(v is None for v in row.values()):
                    out.bad(where, "wrong number of fields")
                    continue
                yield where, row


def load(
    root: str | Path,
    *,
    audio_root: str | Path | None = None,
    audio_roots: Mapping[str, str | Path] | None = None,
    splits: Sequence[str] = TRAIN_SPLITS,
) -> SourceLoad:
    """Read ParaSpeechCaps metadata under ``root`` (``root/data`` or root) and resolve audio as above."""
    expected = [f"data/{s}-*-of-*{{{','.join(EXTENSIONS)}}}" for s in splits]
    root = require_root(root, NAME, expected)
    data_dir = root / "data" if (root / "data").is_dir() else root
    files = []
    for p in sorted(data_dir.iterdir()):
        m = _SHARD_RE.match(p.name[: -len(p.suffix)] if p.suffix else p.name)
        if p.is_file() and p.suffix.lower() in EXTENSIONS and m and m.group("split") in splits:
            files.append((m.group("split"), p))
    if not files:
        raise no_expected_files(data_dir, NAME, expected)
    audio_root = Path(audio_root) if audio_root else root
    roots = {k.lower(): Path(v) for k, v in (audio_roots or {}).items()}

    out = SourceLoad(name=NAME)
    for split, path in files:
        for where, row in progress(_rows(path, out), desc=path.name):
            corpus = str(row.get("source") or "").strip()
            rel = next((str(row[c]).strip() for c in PATH_COLUMNS if row.get(c)), "")
            if not corpus or not rel:
                out.bad(where, "field 'source' or 'relative_audio_path' is missing or empty")
                continue
            bases = [roots[corpus.lower()]] if corpus.lower() in roots else [audio_root, audio_root / corpus]
            candidates = [b / rel for b in bases]
            audio = next((a for a in (resolve_audio(c) for c in candidates) if a is not None), None)
            if audio is None and len(out.searched) < 64:  # a few roots per source corpus: keep the list short
                out.look_in(bases)
            labels = _as_list(row.get("intrinsic_tags")) + _as_list(row.get("situational_tags"))
            extra = {c: row.get(c) for c in EXTRA_COLUMNS if row.get(c) not in (None, "")}
            stem = rel.rsplit(".", 1)[0] if "." in Path(rel).name else rel
            add_clip(
                out,
                where=where,
                cut_id=f"{NAME}/{corpus.lower()}/{stem}",
                audio_path=audio,
                captions=_as_list(row.get("text_description")),
                source=f"{NAME}/{corpus.lower()}",
                domain=DOMAIN,
                media_id=f"{corpus.lower()}:{stem}",
                split=split,
                labels=labels,
                extra=extra,
                expected=candidates[0],
            )
    return out
