"""The `.sbc` artifact: a zip of manifest.json, graph.json, tensors.safetensors, report.json and
per-target program members. Every member's sha256 is in the manifest and checked on load; writes
go to a temporary file renamed into place; nothing is ever unpickled."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from sbcompile import __version__
from sbcompile.errors import ArtifactError
from sbcompile.ir.graph import Graph

FORMAT_VERSION = 1
_CORE = ("graph.json", "float_graph.json", "tensors.safetensors", "report.json")


@dataclass
class Artifact:
    graph: Graph
    config: dict
    report: dict = field(default_factory=dict)
    programs: dict[str, bytes] = field(default_factory=dict)  # "lava/plan.json" -> bytes
    float_graph: Graph | None = None  # the un-spiked baseline; None: the graph is float itself

    @property
    def baseline(self) -> Graph:
        return self.float_graph if self.float_graph is not None else self.graph

    def save(self, path: str | Path) -> None:
        members = {
            "graph.json": _json_bytes(self.graph.to_json()),
            "float_graph.json": _json_bytes(self.baseline.to_json()),
            "tensors.safetensors": st_save(_union_params(self.graph, self.baseline)),
            "report.json": _json_bytes(self.report),
        }
        for name, data in self.programs.items():
            members[f"programs/{name}"] = data
        manifest = {"format_version": FORMAT_VERSION, "sbcompile_version": __version__,
                    "config": self.config,
                    "members": {k: hashlib.sha256(v).hexdigest() for k, v in members.items()}}
        manifest["manifest_sha256"] = _manifest_digest(manifest)
        write_atomic(Path(path), lambda f: _write_zip(f, manifest, members))

    @classmethod
    def load(cls, path: str | Path) -> "Artifact":
        path = Path(path)
        if not path.is_file():
            raise ArtifactError(f"{path}: no such artifact file")
        try:
            with zipfile.ZipFile(path) as z:
                manifest = json.loads(z.read("manifest.json"))
                if not isinstance(manifest, dict) or \
                        manifest.get("manifest_sha256") != _manifest_digest(manifest):
                    raise ArtifactError(f"{path}: member 'manifest.json' fails its checksum "
                                        "(corrupted)")
                if manifest.get("format_version") != FORMAT_VERSION:
                    raise ArtifactError(f"{path}: format version {manifest.get('format_version')}"
                                        f" is not {FORMAT_VERSION}")
                listed = manifest["members"]
                present = set(z.namelist()) - {"manifest.json"}
                if present - set(listed):
                    raise ArtifactError(f"{path}: member '{sorted(present - set(listed))[0]}' "
                                        "is not in the manifest")
                data = {}
                for name, digest in listed.items():
                    if name not in present:
                        raise ArtifactError(f"{path}: member '{name}' is missing")
                    blob = z.read(name)
                    if hashlib.sha256(blob).hexdigest() != digest:
                        raise ArtifactError(f"{path}: member '{name}' fails its checksum "
                                            "(corrupted)")
                    data[name] = blob
        except ArtifactError:
            raise
        except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError, zlib.error,
                NotImplementedError, RuntimeError) as e:  # damaged zip structure or data
            raise ArtifactError(f"{path}: not a readable sbcompile artifact ({e})") from None
        for name in _CORE:
            if name not in data:
                raise ArtifactError(f"{path}: member '{name}' is missing")
        try:
            params = st_load(data["tensors.safetensors"])
            graph = Graph.from_json(json.loads(data["graph.json"]), params)
            float_graph = Graph.from_json(json.loads(data["float_graph.json"]), params)
            report = json.loads(data["report.json"])
        except ArtifactError:
            raise
        except Exception as e:  # malformed content behind a valid checksum
            raise ArtifactError(f"{path}: malformed artifact content ({e})") from None
        programs = {k[len("programs/"):]: v for k, v in data.items() if k.startswith("programs/")}
        return cls(graph, manifest["config"], report, programs, float_graph)


def _union_params(*graphs: Graph) -> dict[str, np.ndarray]:
    """All parameters by name; a name shared by two graphs must hold the same array."""
    union: dict[str, np.ndarray] = {}
    for g in graphs:
        for k, v in g.params.items():
            if k in union and union[k] is not v and not _same_array(union[k], v):
                raise ValueError(f"parameter '{k}' differs between graphs")
            union[k] = v
    return {k: np.asarray(v, order="C") for k, v in union.items()}  # keeps 0-d arrays 0-d


def _same_array(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


def _manifest_digest(manifest: dict) -> str:
    """sha256 of the manifest without its own digest field (protects config and versions)."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(_json_bytes(body)).hexdigest()


def _json_bytes(obj) -> bytes:
    return json.dumps(obj, indent=1, sort_keys=True, allow_nan=False).encode()


def _write_zip(f, manifest: dict, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.writestr("manifest.json", _json_bytes(manifest))
        for name, data in members.items():
            z.writestr(name, data)


def write_atomic(path: Path, write) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it into place; on any
    failure the temporary file is removed and ``path`` is left untouched."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
