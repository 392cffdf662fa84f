"""The lava-nc 0.10.0 wheel runs on Python 3.11 through the import hook alone: unmodified files,
a failing import without the hook, a working one with it, and nothing else changed."""
import base64
import dataclasses
import hashlib
import subprocess
import sys
from importlib import metadata


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)


def test_wheel_fails_without_the_hook_on_this_python():
    bare = _python("import lava.magma.compiler.var_model")
    assert bare.returncode != 0
    assert "mutable default" in bare.stderr and "ByteEncoder" in bare.stderr


def test_hook_makes_only_byte_encoder_hashable():
    code = """
import dataclasses, sys
import sbcompile.runtime.lava
original = dataclasses.dataclass
import lava.magma.compiler.var_model as vm
from lava.proc.dense.process import Dense
assert dataclasses.dataclass is original, "dataclass left patched"
hash(vm.ByteEncoder())
assert vm.CoreEncoder.__hash__ is None  # the other dataclasses keep their upstream form
assert vm.CoreEncoder().x == vm.ByteEncoder()
assert not any(type(f).__module__.startswith("sbcompile") for f in sys.meta_path), "hook stayed"
print("ok")
"""
    shimmed = _python(code)
    assert shimmed.returncode == 0, shimmed.stderr
    assert shimmed.stdout.strip() == "ok"


def test_installed_lava_files_match_the_wheel_record():
    dist = metadata.distribution("lava-nc")
    assert dist.version == "0.10.0"
    checked = 0
    for f in dist.files:
        if not str(f).startswith("lava/") or f.hash is None:
            continue
        algo, expected = f.hash.mode, f.hash.value
        digest = hashlib.new(algo, f.locate().read_bytes()).digest()
        assert base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == expected, str(f)
        checked += 1
    assert checked > 100


def test_hook_is_idempotent_and_inert_in_this_process():
    from sbcompile.runtime.lava import shim

    shim.install()
    shim.install()
    assert sum(type(f).__name__ == "_PatchingFinder" for f in sys.meta_path) <= 1


def test_lava_loads_after_something_fixed_the_start_method():
    """tqdm makes a multiprocessing lock when its first bar starts (torch.fx's interpreter
    starts one), which fixes the start method before Lava asks for fork."""
    code = """
import multiprocessing
import sbcompile.runtime.lava
multiprocessing.RLock()
from lava.proc.dense.process import Dense
assert multiprocessing.get_start_method() == "fork"
assert multiprocessing.set_start_method.__module__ == "multiprocessing.context", "left patched"
print("ok")
"""
    shimmed = _python(code)
    assert shimmed.returncode == 0, shimmed.stderr
    assert shimmed.stdout.strip() == "ok"


def test_another_start_method_still_conflicts_with_lava():
    code = """
import multiprocessing
import sbcompile.runtime.lava
multiprocessing.set_start_method("spawn")
from lava.proc.dense.process import Dense
"""
    shimmed = _python(code)
    assert shimmed.returncode != 0 and "context has already been set" in shimmed.stderr
    assert dataclasses.dataclass.__module__ == "dataclasses"
