"""The house's rules, checked on the source: which room may import which, what ``import flowlite`` loads, and that
every "theory §N" citation names a section of docs/theory.md while nothing points outside the repository."""

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "flowlite"
ROOMS = ("methods", "rewards", "toy", "sd3", "flux", "jobs")
MODEL_PACKAGES = ("sd3", "flux")  # every image model family is a sibling package; add it here
THIRD_PARTY_HEAVY = ("diffusers", "transformers", "peft")


def room(module: str) -> str:
    """'flowlite.toy.gmm' -> 'toy'; 'flowlite.solvers' -> 'core'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ROOMS else "core"


def flowlite_imports(path: Path) -> set[str]:
    """Every flowlite module a file imports, at any depth (function-level imports count too; imports for type
    annotations only, under ``if TYPE_CHECKING:``, do not run and do not count)."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and getattr(block.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(block)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("flowlite"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("flowlite")}
    return found


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        yield name, path


FORBIDDEN = {
    "core": {"toy", "jobs", *MODEL_PACKAGES, "methods"},
    "methods": {"toy", "jobs", *MODEL_PACKAGES},
    "rewards": {"toy", "jobs", *MODEL_PACKAGES, "methods"},
    "toy": {"jobs", *MODEL_PACKAGES},
    **{m: {"jobs", "toy"} for m in MODEL_PACKAGES},
    "sd3": {"jobs", "toy", "flux"},  # sd3/ holds the image families' shared pieces (latents, VAE, LoRA files,
}                                    # prompt embeddings); flux/ builds on them, never the other way round


def test_import_rule_core_and_methods_never_import_a_world_and_rewards_no_model():
    broken = []
    for name, path in modules():
        if name in ("flowlite", "flowlite.__main__"):  # the public API (lazily) and the entry point name every room
            continue
        for target in flowlite_imports(path):
            if target != "flowlite" and room(target) in FORBIDDEN.get(room(name), set()):
                broken.append(f"{name} ({room(name)}) imports {target} ({room(target)})")
    assert not broken, "\n".join(broken)


def test_the_rule_sees_a_forbidden_import(tmp_path):
    """The checker itself: a method that imports the 2-D world is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from flowlite.toy.gmm import GaussianMixture\n")
    assert room("flowlite.methods.bad") == "methods"
    assert any(room(t) in FORBIDDEN["methods"] for t in flowlite_imports(bad))
    assert room("flowlite.flux.flow") == "flux" and "flux" in FORBIDDEN["sd3"] and "flux" in FORBIDDEN["methods"]


def test_method_files_import_only_the_core_and_their_own_room():
    for path in sorted((PACKAGE / "methods").glob("*.py")):
        rooms = {room(t) for t in flowlite_imports(path)}
        assert rooms <= {"core", "methods", "rewards"}, (path.name, rooms)


def test_import_flowlite_and_its_public_api_load_no_diffusers_transformers_or_peft():
    code = ("import sys, flowlite\n"
            "names = [n for n in flowlite.__all__ if n not in ('SD3Flow', 'load_sd3', 'PromptCache', 'LatentReward',"
            " 'image_reward')]\n"
            "[getattr(flowlite, n) for n in names]\n"
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(THIRD_PARTY_HEAVY)!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_no_file_over_300_lines():
    long = [f"{p.relative_to(ROOT)}: {n}" for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 300]
    assert not long, long


# ------------------------------------------------------------------------------------------------ citations
THEORY = ROOT / "docs" / "theory.md"
CITATION = re.compile(r"theory\s+§\s*(\d+(?:\.\d+)?)((?:\s*(?:,|and|–|-)\s*§?\s*\d+(?:\.\d+)?)*)")
OUTSIDE = re.compile(r"\.\./shared|spec\s*§|spec/algorithms|ecosystem\s*§|DESIGN\.md|DESIGN\s*§|STYLE\.md")


def theory_sections() -> set[str]:
    return {m.group(1) for m in re.finditer(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", THEORY.read_text(), re.M)}


def cited_files():
    files = [p for p in PACKAGE.rglob("*.py")] + [ROOT / "README.md", ROOT / "Makefile"]
    files += sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "bench").glob("*"))
    files += sorted((ROOT / "tests").rglob("*.py")) + sorted((ROOT / "docs").glob("*.md"))
    return [p for p in files if p.is_file()]


def text_of(path: Path) -> str:
    if path.suffix == ".ipynb":
        return "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"])
    return path.read_text()


def citations(text: str) -> list[str]:
    found = []
    for m in CITATION.finditer(text):
        found.append(m.group(1))
        found += re.findall(r"\d+(?:\.\d+)?", m.group(2))
    return found


def test_every_theory_citation_names_a_section_that_exists():
    sections = theory_sections()
    assert {"1", "2", "5", "6", "7", "13"} <= sections
    missing = [f"{p.relative_to(ROOT)}: §{n}" for p in cited_files() for n in citations(text_of(p))
               if n not in sections]
    assert not missing, missing


def test_the_citation_check_reads_lists_and_ranges():
    assert citations("see theory §3.3, §4 and §6.10") == ["3.3", "4", "6.10"]


def test_nothing_points_outside_the_repository():
    this = Path(__file__).resolve()
    outside = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in cited_files() if p.resolve() != this
               for m in OUTSIDE.finditer(text_of(p))]
    assert not outside, outside


@pytest.mark.parametrize("path", ["flowlite/solvers.py", "flowlite/adjoint.py", "flowlite/methods/adjoint_matching.py"])
def test_core_docstrings_cite_the_theory(path):
    assert citations((ROOT / path).read_text())
