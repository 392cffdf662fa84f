"""Each fact that follows from an op or a setting is written once in the code, where the op table
(``sbcompile/ir/ops.py``), the shape rules (``sbcompile/ir/shapes.py``), the config's domains
(``sbcompile/config.py``) or the digit split (``runtime/triton/digits.py``) keep it; everyone
else imports it. Grep level: the code (comments and docstrings left out) of the package and its
stages is searched for each fact's spelling."""
import ast
import re
from collections import Counter
from pathlib import Path

import pytest

from sbcompile.config import CHOICES
from sbcompile.ir.ops import OPS

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("sbcompile", "frontends", "passes", "backends", "runtime")


def _code() -> dict[str, ast.Module]:
    """Each source file's syntax tree without its docstrings (comments never reach it)."""
    trees = {}
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                body = getattr(node, "body", None)
                if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and \
                        isinstance(body[0].value, ast.Constant) and \
                        isinstance(body[0].value.value, str):
                    body[0] = ast.Pass()
            trees[str(path.relative_to(ROOT))] = tree
    return trees


CODE = _code()
TEXT = {path: ast.unparse(tree) for path, tree in CODE.items()}

# fact -> (where it lives, a pattern matching its every spelling in unparsed code)
SPELLED_ONCE = {
    "the encoder's safety clamp 2**20": (  # a count or limit set to it (2 ** 20 bytes is MiB)
        "sbcompile/ir/ops.py",
        r"(?i)\b\w*(count|limit|safety|clamp)\w*(: \w+)? ?= ?(2 \*\* 20|1048576|1 << 20)\b"),
    "the default k = 3.0": ("sbcompile/ir/ops.py",
                            r"""\bk=3\.0\b|['"]k['"]: 3\.0\b|\bk: float = 3\.0\b"""),
    "the dynamic count bound ceil(k n) + 1": (
        "sbcompile/ir/ops.py", r"""ceil\([^)]*\[['"]k['"]\] \*"""),
    "the dynamic sum bound (k + 1/2) n": (
        "sbcompile/ir/ops.py", r"""(\[['"]k['"]\]|\bk) \+ 0\.5\b"""),
    "the window output size (conv, pooling)": (
        "sbcompile/ir/shapes.py", r"math\.floor\(steps\)|\) // strides?\b"),
    "the signed base-128 digit split": ("runtime/triton/digits.py", r"& 127\b|>> 7\b"),
    "the output dtype rules": ("sbcompile/ir/ops.py", r"def (output|infer)_dtypes\b"),
}


# where a fact is written again for a reason: the fake (shape-only) conv kernel PyTorch traces
# with computes on its symbolic sizes, which the IR's shape rule does not take
AGAIN = {"the window output size (conv, pooling)": {"runtime/torch/spike_ops.py"}}


@pytest.mark.parametrize("fact", SPELLED_ONCE)
def test_fact_is_written_once(fact):
    home, pattern = SPELLED_ONCE[fact]
    found = Counter({path: len(re.findall(pattern, text)) for path, text in TEXT.items()
                     if path not in AGAIN.get(fact, ())})
    found = +found
    assert list(found) == [home] and found[home] == 1, dict(found)


def _string_collections() -> list[tuple[str, frozenset]]:
    """Every tuple, list or set literal of two or more string constants, with its file."""
    found = []
    for path, tree in CODE.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and len(node.elts) > 1 and \
                    all(isinstance(e, ast.Constant) and isinstance(e.value, str)
                        for e in node.elts):
                found.append((path, frozenset(e.value for e in node.elts)))
    return found


DOMAINS = {**{f"config {k}": v for k, v in CHOICES.items()},
           **{f"{spec.name} {attr}": v for spec in OPS.values()
              for attr, v in spec.choices.items()}}


@pytest.mark.parametrize("domain", DOMAINS)
def test_each_domain_is_listed_once(domain):
    """A field's or attribute's allowed values are listed in one place (config's CHOICES or the
    op table); config.check, the artifact schema and the CLI derive theirs from it."""
    values = frozenset(DOMAINS[domain])
    places = [path for path, c in _string_collections() if c == values]
    assert len(places) <= 1, places


def test_the_patterns_find_what_they_look_for():
    """The searches above are only as good as their patterns: each finds its fact where it
    lives (so a pattern that matches nothing cannot pass for a fact written once)."""
    for fact, (home, pattern) in SPELLED_ONCE.items():
        assert re.search(pattern, TEXT[home]), fact
    assert any(c == frozenset(("dynamic", "static")) for _, c in _string_collections())
