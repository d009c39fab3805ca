"""The documentation (docs/, built by `make test` with mkdocs): its recipes run as written, its file citations exist.

The recipes' configs and ``rad ... --print-config`` command lines are resolved by the real ``rad`` command (nothing
runs), so a renamed or mistyped key in a recipe fails here.
"""

import re
import shlex
from pathlib import Path

import pytest
import yaml

from rad.cli import main

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RECIPES = sorted((DOCS / "recipes").glob("*.md"))
#: A recipe's config block starts with ``# NAME.yaml: a rad <command> config``.
CONFIG_BLOCK = re.compile(r"^# (?P<name>[\w.-]+\.yaml): a rad [\w -]+ config$")


def _blocks(path: Path, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", path.read_text(), flags=re.M | re.S)


def _commands(block: str) -> list[list[str]]:
    """The ``rad ...`` command lines of a bash block (continuations joined, comments dropped)."""
    lines = block.replace("\\\n", " ").splitlines()
    return [args for args in (shlex.split(line, comments=True) for line in lines) if args and args[0] == "rad"]


def test_every_recipe_has_a_command_to_check():
    assert [p.name for p in RECIPES] == ["evaluate-two-models.md", "one-gpu.md", "ray-cluster.md"]
    for path in RECIPES:
        assert any("--print-config" in args for block in _blocks(path, "bash") for args in _commands(block)), path


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_the_recipes_configs_and_commands_resolve(recipe, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # recipes run from the repository root
    files = {}
    for block in _blocks(recipe, "yaml"):
        match = CONFIG_BLOCK.match(block.splitlines()[0])
        if match:  # relative bases are written against the repository root, where the recipe saves the file
            text = re.sub(r"^base: (?!/)", f"base: {ROOT}/", block, flags=re.M)
            files[match["name"]] = tmp_path / match["name"]
            files[match["name"]].write_text(text)
    checked = 0
    for block in _blocks(recipe, "bash"):
        for args in _commands(block):
            if "--print-config" not in args:
                continue
            args = [str(files.get(a, a)) for a in args[1:]]
            assert main(args) == 0, (args, capsys.readouterr().err)
            assert isinstance(yaml.safe_load(capsys.readouterr().out), dict)
            checked += 1
    assert checked


# Paths the docs cite: a backticked relative path of a file type the repository holds.
CITED = re.compile(r"`((?:rad|tests|launch|bench|docs|reward_cost_models|safe_rlhf_baseline|risk_dpo)/[\w./-]+"
                   r"\.(?:py|md|yaml|json|sh|sbatch))`")


def test_the_files_the_docs_and_readme_cite_exist():
    missing = [(doc.relative_to(ROOT), cited) for doc in [ROOT / "README.md", *DOCS.rglob("*.md")]
               for cited in CITED.findall(doc.read_text()) if not (ROOT / cited).exists()]
    assert missing == []


def test_nothing_cites_a_file_outside_the_repository():
    sources = [p for pattern in ("rad/**/*.py", "reward_cost_models/**/*.py", "safe_rlhf_baseline/**/*.py",
                                 "risk_dpo/**/*.py", "launch/**/*", "bench/**/*.py", "docs/**/*.md", "*.md")
               for p in ROOT.glob(pattern) if p.is_file()]
    offending = [str(p.relative_to(ROOT)) for p in sources
                 if re.search(r"DESIGN\.md|\.\./shared", p.read_text(errors="ignore"))]
    assert offending == []
