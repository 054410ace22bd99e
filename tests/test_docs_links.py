"""The documentation's links resolve inside the repository, and the README stays short.

Checks README.md, docs/**/*.md and configs/**/README.md: every relative Markdown link
`[text](target)` (and reference definition `[id]: target`) must name a file or folder that
exists, resolved from the file that holds the link, and must stay inside the repository (a
user's clone has only the repository). Web links, mailto: and pure #anchors are skipped; a
#fragment is stripped. Links inside fenced code blocks and inline code spans are not links.
Fast and offline: no network, no jax.
"""

from __future__ import annotations

import pathlib
import re
import urllib.parse

REPO = pathlib.Path(__file__).resolve().parents[1]
README_MAX_BYTES = 15 * 1024
DOCS_INDEX_HEADING = "## Docs"

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
_INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
_REFERENCE_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)", re.MULTILINE)
_SKIP_PREFIXES = ("http://", "https://", "mailto:", "#")


def markdown_files(root: pathlib.Path = REPO) -> list[pathlib.Path]:
  """README.md, docs/**/*.md and configs/**/README.md under `root`, sorted."""
  files = [root / "README.md"] if (root / "README.md").is_file() else []
  files += sorted((root / "docs").rglob("*.md"))
  files += sorted((root / "configs").rglob("README.md"))
  return files


def _strip_code(text: str) -> str:
  """Text without fenced code blocks; inline code spans replaced by a placeholder word."""
  text = _FENCE.sub("", text)
  return _CODE_SPAN.sub("code", text)


def link_targets(text: str) -> list[str]:
  """Every link target written in Markdown `text`, in order of appearance."""
  text = _strip_code(text)
  targets = [m.group(1) for m in _INLINE_LINK.finditer(text)]
  targets += [m.group(1) for m in _REFERENCE_DEF.finditer(text)]
  return [t[1:-1] if t.startswith("<") and t.endswith(">") else t for t in targets]


def _local_path(target: str) -> str | None:
  """The path part of a relative link, or None for web, mailto: and pure-anchor links."""
  if target.lower().startswith(_SKIP_PREFIXES):
    return None
  return urllib.parse.unquote(target.split("#", 1)[0].split("?", 1)[0])


def broken_links(files: list[pathlib.Path], root: pathlib.Path = REPO) -> list[str]:
  """`file: target` for every relative link that is missing or points outside `root`."""
  root = root.resolve()
  broken = []
  for md in files:
    for target in link_targets(md.read_text(encoding="utf-8")):
      path = _local_path(target)
      if path is None:
        continue
      resolved = (md.parent / path).resolve()
      inside = resolved == root or root in resolved.parents
      if path.startswith("/") or not inside or not resolved.exists():
        broken.append(f"{md.relative_to(root)}: {target}")
  return broken


def test_markdown_files_are_found():
  names = [p.relative_to(REPO).as_posix() for p in markdown_files()]
  assert "README.md" in names
  assert any(n.startswith("docs/") for n in names), names


def test_every_relative_link_resolves_inside_the_repository():
  broken = broken_links(markdown_files())
  assert not broken, "broken or outside-the-repository links:\n  " + "\n  ".join(broken)


def test_readme_is_at_most_15_kib():
  size = (REPO / "README.md").stat().st_size
  assert size <= README_MAX_BYTES, (
      f"README.md is {size} bytes, more than {README_MAX_BYTES}: move measurements beside the "
      "configs that produced them (configs/<group>/README.md) or reference into docs/.")


def test_readme_docs_index_links_every_doc():
  text = (REPO / "README.md").read_text(encoding="utf-8")
  assert DOCS_INDEX_HEADING + "\n" in text, f"README.md has no {DOCS_INDEX_HEADING!r} section"
  section = text.split(DOCS_INDEX_HEADING + "\n", 1)[1].split("\n## ", 1)[0]
  linked = set()
  for target in link_targets(section):
    path = _local_path(target)
    if path:
      linked.add((REPO / path).resolve())
  expected = {p.resolve() for p in (REPO / "docs").rglob("*") if p.is_file()}
  expected |= {p.resolve() for p in (REPO / "configs").rglob("README.md")}
  missing = sorted(p.relative_to(REPO).as_posix() for p in expected - linked)
  assert not missing, f"README.md's {DOCS_INDEX_HEADING!r} index does not link: {missing}"


def test_checker_reports_broken_and_outside_links(tmp_path):
  """The checker itself: it must fail on what it is meant to catch."""
  (tmp_path / "docs").mkdir()
  (tmp_path / "docs" / "a.md").write_text("# a\n", encoding="utf-8")
  (tmp_path / "README.md").write_text(
      "[ok](docs/a.md#part) [anchor](#top) [web](https://example.com/x) [mail](mailto:a@b.c)\n"
      "[`spanned`](docs/a.md) [gone](docs/missing.md) [out](../elsewhere/DESIGN.md)\n"
      "`[not a link](nowhere.md)`\n"
      "```\n[also not](nowhere.md)\n```\n"
      "[ref]: docs/none.md\n", encoding="utf-8")
  broken = broken_links(markdown_files(tmp_path), tmp_path)
  assert broken == ["README.md: docs/missing.md", "README.md: ../elsewhere/DESIGN.md",
                    "README.md: docs/none.md"]
