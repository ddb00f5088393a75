"""The docs name only what exists: paths, ``python -m`` modules, links, the layout paragraph, the plugin groups."""

import re
from pathlib import Path

from lelp_lightning import registry

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
TOP = ("lelp_lightning", "configs", "benchmarks", "scripts", "tests", "examples", "docs")
# a repository path as the docs write it: not the tail of a longer path or URL; <name> and … stand for any text
PATH = re.compile(rf"(?<![\w/.-])((?:{'|'.join(TOP)})/[\w./<>*…-]*)")
MODULE = re.compile(rf"python -m ((?:{'|'.join(TOP)})(?:\.[\w<>]+)+)")
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")


def exists(pattern: str, base: Path = ROOT) -> bool:
    """Whether ``pattern`` (``<...>`` and ``…`` match any text within one path part) names something under ``base``."""
    glob = re.sub(r"<[^>]*>|…", "*", pattern.rstrip("/")) or "."
    return any(base.glob(glob))


def named(regex: re.Pattern) -> list[tuple[str, str]]:
    return [(f"{doc.name}:{text[: m.start()].count(chr(10)) + 1}", m.group(1).rstrip(".,:;"))
            for doc in DOCS for text in [doc.read_text()] for m in regex.finditer(text)]


def test_every_path_the_docs_name_exists():
    paths = named(PATH)
    assert len(paths) > 50  # the pattern still finds the docs' paths
    assert [(where, path) for where, path in paths if not exists(path)] == []


def test_every_module_the_docs_run_with_python_m_exists():
    modules = named(MODULE)
    assert modules
    missing = [(where, module) for where, module in modules
               if not (exists(module.replace(".", "/") + ".py") or exists(module.replace(".", "/") + "/__main__.py"))]
    assert missing == []


def test_every_relative_link_resolves():
    broken = [(doc.name, target) for doc in DOCS for target in LINK.findall(doc.read_text())
              if "://" not in target and not target.startswith("mailto:") and not (doc.parent / target).exists()]
    assert broken == []


def test_the_readme_layout_paragraph_names_only_what_is_in_the_package():
    text = (ROOT / "README.md").read_text()
    paragraph = re.search(r"^`lelp_lightning/` — (.*?)\n\n", text, re.S | re.M)
    assert paragraph, "README.md lost its layout paragraph (`lelp_lightning/` — ...)"
    names = re.findall(r"`([\w]+(?:\.py|/))`", paragraph.group(1))
    assert {"sources/", "data/", "cache/", "fileio.py", "commands.py", "checkpoints.py", "runlayer/"} <= set(names)
    assert [name for name in names if not (ROOT / "lelp_lightning" / name).exists()] == []


def test_contributing_names_every_entry_point_group(monkeypatch):
    """The groups are the ones ``load_plugins`` asks ``importlib.metadata`` for (answered with no plugins here)."""
    groups = []
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    monkeypatch.setattr(registry.importlib.metadata, "entry_points", lambda group: groups.append(group) or [])
    registry.load_plugins()
    assert "lelp_lightning.strategies" in groups
    text = (ROOT / "CONTRIBUTING.md").read_text()
    assert [group for group in groups if f"`{group}`" not in text] == []
