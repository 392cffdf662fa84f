"""The `.sbc` artifact: a zip of manifest.json, graph.json, tensors.safetensors, report.json and
per-target program members. Loading refuses a member whose declared size breaks the caps before
inflating it, checks every member's sha256 (listed in the manifest), the format version, every
JSON member against its schema and each program against the graph (``artifact_checks``); writes
go to a temporary file renamed into place; nothing is ever unpickled."""
from __future__ import annotations

import hashlib
import json
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from sbcompile.version import __version__
from sbcompile.artifact_checks import check_lava_program, check_member, check_triton_program
from sbcompile.config import CompileConfig
from sbcompile.errors import ArtifactError, SbcError
from sbcompile.ir.graph import Graph
from sbcompile.ir.validate import validate
from sbcompile.output_path import write_atomic

FORMAT_VERSION = 1
# Caps checked on the zip's directory before a member is inflated: peak memory while loading is
# bounded by the sum of the declared sizes, each at most its cap and at most MAX_RATIO times its
# compressed size (so a small file cannot claim a huge member).
MEMBER_CAPS = {"manifest": 1 << 20, "json": 256 << 20, "binary": 16 << 30}
MAX_RATIO = 100
RATIO_SLACK = 1 << 16
MAX_MEMBERS = 64
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
        """Read and check an artifact: member sizes against the caps before anything is
        inflated, every checksum, the format version, every JSON member against its schema,
        the graphs' validity and each stored program against the graph."""
        path = Path(path)
        if not path.is_file():
            raise ArtifactError(f"{path}: no such artifact file")
        try:
            with zipfile.ZipFile(path) as z:
                infos = _checked_members(z, path)
                manifest = _parse_json(path, "manifest.json", z.read(infos["manifest.json"]))
                if manifest.get("manifest_sha256") != _manifest_digest(manifest):
                    raise ArtifactError(f"{path}: member 'manifest.json' fails its checksum "
                                        "(corrupted)")
                if manifest["format_version"] != FORMAT_VERSION:
                    raise ArtifactError(f"{path}: format version {manifest['format_version']}"
                                        f" is not {FORMAT_VERSION}")
                listed = manifest["members"]
                present = set(infos) - {"manifest.json"}
                if present - set(listed):
                    raise ArtifactError(f"{path}: member '{sorted(present - set(listed))[0]}' "
                                        "is not in the manifest")
                data = {}
                for name, digest in listed.items():
                    if name not in present:
                        raise ArtifactError(f"{path}: member '{name}' is missing")
                    blob = _inflate(z, infos[name], path)
                    if hashlib.sha256(blob).hexdigest() != digest:
                        raise ArtifactError(f"{path}: member '{name}' fails its checksum "
                                            "(corrupted)")
                    data[name] = bytes(blob)
        except ArtifactError:
            raise
        except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError, zlib.error,
                NotImplementedError, RuntimeError) as e:  # damaged zip structure or data
            raise ArtifactError(f"{path}: not a readable sbcompile artifact ({e})") from None
        for name in _CORE:
            if name not in data:
                raise ArtifactError(f"{path}: member '{name}' is missing")
        docs = {name: _parse_json(path, name, blob) for name, blob in data.items()
                if name.endswith(".json")}
        try:
            config = manifest["config"]
            if config:
                CompileConfig.from_json(config)
            params = st_load(data["tensors.safetensors"])
            graph = Graph.from_json(docs["graph.json"], params)
            float_graph = Graph.from_json(docs["float_graph.json"], params)
        except SbcError as e:
            raise ArtifactError(f"{path}: {e}") from None
        except Exception as e:  # malformed binary content behind a valid checksum
            raise ArtifactError(f"{path}: malformed artifact content ({e})") from None
        for name, g in (("graph.json", graph), ("float_graph.json", float_graph)):
            try:
                validate(g)
            except SbcError as e:
                raise ArtifactError(f"{path}: member '{name}': {e}") from None
        programs = {k[len("programs/"):]: v for k, v in data.items() if k.startswith("programs/")}
        art = cls(graph, config, docs["report.json"], programs, float_graph)
        _check_programs(path, art)
        return art


def _checked_members(z: zipfile.ZipFile, path: Path) -> dict[str, zipfile.ZipInfo]:
    """The zip's entries by name, refused before any is inflated if there are too many, a name
    repeats, or a member's declared size exceeds its cap or its compression ratio exceeds
    MAX_RATIO (zipfile never inflates past the declared size)."""
    entries = z.infolist()
    if len(entries) > MAX_MEMBERS:
        raise ArtifactError(f"{path}: {len(entries)} members, more than {MAX_MEMBERS}")
    infos: dict[str, zipfile.ZipInfo] = {}
    for info in entries:
        if info.filename in infos:
            raise ArtifactError(f"{path}: member '{info.filename}' appears twice")
        if not _known_member(info.filename):
            raise ArtifactError(f"{path}: member '{info.filename}' is not one sbcompile writes")
        cap = member_cap(info.filename)
        if info.file_size > cap:
            raise ArtifactError(f"{path}: member '{info.filename}' declares {info.file_size:,} "
                                f"bytes, over its cap of {cap:,}")
        if info.file_size > MAX_RATIO * info.compress_size + RATIO_SLACK:
            raise ArtifactError(f"{path}: member '{info.filename}' would inflate "
                                f"{info.file_size:,} bytes from {info.compress_size:,} (more "
                                f"than {MAX_RATIO}x)")
        infos[info.filename] = info
    if "manifest.json" not in infos:
        raise ArtifactError(f"{path}: member 'manifest.json' is missing")
    return infos


def _inflate(z: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> bytearray:
    """The member's bytes in one buffer of its declared size (read in 1 MiB pieces), so that a
    member failing its checksum never costs more than its declared size."""
    blob = bytearray(info.file_size)
    view, pos = memoryview(blob), 0
    with z.open(info) as f:
        while piece := f.read(min(1 << 20, info.file_size - pos) or 1):
            if pos + len(piece) > info.file_size:
                raise ArtifactError(f"{path}: member '{info.filename}' is longer than it "
                                    "declares")
            view[pos:pos + len(piece)] = piece
            pos += len(piece)
    if pos != info.file_size:
        raise ArtifactError(f"{path}: member '{info.filename}' is shorter than it declares")
    return blob


def _known_member(name: str) -> bool:
    """The manifest, the core members, and program members of a target that stores programs."""
    from sbcompile.target_registry import PROGRAM_TARGETS

    target = name.split("/")[1] if name.startswith("programs/") and name.count("/") >= 2 else None
    return name == "manifest.json" or name in _CORE or target in PROGRAM_TARGETS


def member_cap(name: str) -> int:
    """The largest size a member may declare (see MEMBER_CAPS)."""
    if name == "manifest.json":
        return MEMBER_CAPS["manifest"]
    return MEMBER_CAPS["json"] if name.endswith(".json") else MEMBER_CAPS["binary"]


def _parse_json(path: Path, member: str, blob: bytes):
    try:
        doc = json.loads(blob)
    except (ValueError, RecursionError) as e:
        raise ArtifactError(f"{path}: member '{member}' is not valid JSON ({e})") from None
    check_member(str(path), member, doc)
    return doc


def _check_programs(path: Path, art: "Artifact") -> None:
    """Each stored program parses and agrees with the compiled graph."""
    from sbcompile.runtime.lava.program import LavaProgram
    from sbcompile.runtime.triton.program import TritonProgram

    lava = {k: v for k, v in art.programs.items() if k.startswith("lava/")}
    triton = {k: v for k, v in art.programs.items() if k.startswith("triton/")}
    if lava:
        check_lava_program(str(path), art.graph, LavaProgram.from_members(lava))
    if triton:
        check_triton_program(str(path), art.graph, TritonProgram.from_members(triton, art.graph))


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
    """Deflate every member, except one that would inflate more than MAX_RATIO times (an
    all-zero tensor): it is stored, so that our own artifacts always pass the loader's caps."""
    stored: set[str] = set()
    for _ in range(2):
        f.seek(0)
        f.truncate()
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
            z.writestr("manifest.json", _json_bytes(manifest))
            for name, data in members.items():
                z.writestr(name, data, compress_type=zipfile.ZIP_STORED if name in stored
                           else zipfile.ZIP_DEFLATED)
            too_dense = {i.filename for i in z.infolist()
                         if i.file_size > MAX_RATIO * i.compress_size + RATIO_SLACK}
        if not too_dense:
            return
        stored |= too_dense
