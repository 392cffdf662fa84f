"""No import runs back up the pipeline: a stage imports the core (``sbcompile.ir``, errors,
config, progress) and the stages it hands work to, never one before it (frontends -> passes ->
backends -> runtime; backends produce runtime programs, and passes measure with the reference
interpreter)."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("frontends", "passes", "backends", "runtime")
# stage -> the stages it may import
ALLOWED = {"frontends": set(), "passes": {"runtime"}, "backends": {"runtime"}, "runtime": set()}


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
    return names


@pytest.mark.parametrize("stage", STAGES)
def test_stage_imports_only_what_it_hands_work_to(stage):
    bad = []
    for path in sorted((ROOT / stage).rglob("*.py")):
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] == "sbcompile" and len(parts) > 1 and parts[1] in STAGES and \
                    parts[1] != stage and parts[1] not in ALLOWED[stage]:
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, "\n".join(bad)


def test_the_driver_is_imported_by_nothing_it_runs():
    """``sbcompile.pipeline`` drives the pass list (``passmanager``), the pre-flight estimate
    and the tune search; none of them, and no pass, imports it back (not even lazily)."""
    below = [ROOT / "sbcompile" / f"{m}.py" for m in ("passmanager", "preflight", "memory",
                                                       "tune", "tune_metrics")]
    below += sorted((ROOT / "passes").rglob("*.py"))
    bad = [f"{p.relative_to(ROOT)} imports {name}" for p in below for name in _imports(p)
           if name == "sbcompile.pipeline" or name.startswith("sbcompile.pipeline.")]
    assert not bad, "\n".join(bad)
