"""Fetch Debian data packages without installing them: `apt-get download` + `dpkg -x` into a cache.

Each package is unpacked once into ``<cache>/<pkg>/`` and marked done with ``<cache>/<pkg>/.unpacked``; a
crash mid-unpack leaves no marker, so the next call starts that package again from the .deb.
"""
from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


class DebianFetchError(RuntimeError):
    """A Debian package could not be downloaded or unpacked."""


def default_cache_dir() -> Path:
    env = os.environ.get("AUDIOLP_DEB_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "audiolp" / "debian"


@dataclass(frozen=True)
class DebPackage:
    name: str
    version: str
    root: Path  # the unpacked file system tree

    def path(self, rel: str) -> Path:
        return self.root / rel.lstrip("/")

    def licence(self) -> str:
        """Licence names from the package's machine-readable copyright file (``License:`` fields)."""
        return deb_licence(self.root, self.name)


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


def _download(pkg: str, deb_dir: Path) -> Path:
    existing = sorted(deb_dir.glob(f"{pkg}_*.deb"))
    if existing:
        return existing[-1]
    if shutil.which("apt-get") is None:
        raise DebianFetchError(f"package {pkg!r}: apt-get not found; MiniStew needs a Debian/Ubuntu system (or a cache)")
    res = _run(["apt-get", "download", pkg], deb_dir)
    if res.returncode != 0 and os.geteuid() == 0:
        # A fresh container often has no package lists yet; refresh once and retry.
        _run(["apt-get", "update", "-qq"], deb_dir)
        res = _run(["apt-get", "download", pkg], deb_dir)
    existing = sorted(deb_dir.glob(f"{pkg}_*.deb"))
    if res.returncode != 0 or not existing:
        raise DebianFetchError(
            f"`apt-get download {pkg}` failed in {deb_dir}: {res.stderr.strip()[-400:]}\n"
            f"fix: run `sudo apt-get update` (package lists may be missing) or place {pkg}_*.deb in {deb_dir}"
        )
    return existing[-1]


def fetch_deb(pkg: str, cache_dir: str | os.PathLike | None = None) -> DebPackage:
    """Download (once) and unpack (once) Debian package ``pkg``; returns where its files lie."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    deb_dir = cache / "debs"
    root = cache / "unpacked" / pkg
    deb_dir.mkdir(parents=True, exist_ok=True)
    lock_path = cache / f".{pkg}.lock"
    # A file lock: parallel builds (pytest-xdist, two shells) share the cache without racing.
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        marker = root / ".unpacked"
        if marker.exists():
            return DebPackage(pkg, marker.read_text().strip(), root)
        deb = _download(pkg, deb_dir)
        tmp = root.with_name(pkg + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        res = _run(["dpkg-deb", "-x", str(deb), str(tmp)], cache)
        if res.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            deb.unlink(missing_ok=True)  # a truncated download: fetch it again next time
            raise DebianFetchError(f"`dpkg-deb -x {deb}` failed: {res.stderr.strip()[-400:]}; the .deb was removed, retry")
        version = deb.name.split("_")[1].replace("%3a", ":")
        (tmp / ".unpacked").write_text(version)
        shutil.rmtree(root, ignore_errors=True)
        os.replace(tmp, root)
        return DebPackage(pkg, version, root)


_LICENCE_RE = re.compile(r"^License:\s*(\S.*)$", re.MULTILINE)


def deb_licence(root: Path, pkg: str) -> str:
    """The distinct ``License:`` values of ``usr/share/doc/<pkg>/copyright`` (DEP-5), or a pointer to the file."""
    cp = Path(root) / "usr" / "share" / "doc" / pkg / "copyright"
    if not cp.exists():
        return "see Debian package copyright"
    text = cp.read_text(errors="replace")
    names: list[str] = []
    for m in _LICENCE_RE.finditer(text):
        name = m.group(1).strip()
        # Non-DEP-5 files put prose after "License:"; keep only short licence identifiers.
        if len(name) <= 40 and not re.search(r"copyright|from |readme|:$", name, re.I) and name not in names:
            names.append(name)
    if not names:  # free-form copyright file: name the licences it mentions
        for pat, name in ((r"GNU General Public License|\bGPL\b", "GPL"), (r"\bMIT\b", "MIT"),
                          (r"Creative Commons|CC-BY", "CC-BY"), (r"public domain", "public-domain")):
            if re.search(pat, text, re.I):
                names.append(name)
    return ", ".join(names) if names else "see /usr/share/doc/%s/copyright" % pkg
