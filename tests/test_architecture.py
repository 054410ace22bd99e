"""The package's shape: few top-level modules, no import circles, no import from a lower floor
back up (STYLE: "a folder per kind of thing"). Reads the sources with `ast`; imports nothing."""

import ast
import collections
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1] / "clipjax"

# Floors, bottom first: a part may import from its own floor or below, never from above.
FLOORS = (
    ("cache", "multihost", "models", "data", "secagg"),
    ("clock",),                # the virtual clock: devices, calibration, charges, round times
    ("clip", "fl"),            # CLIP's client side; local training, aggregation, server
    ("fluid",),
    ("methods",),
    ("config_types",),
    ("round",),                # the round algorithm and its wiring
    ("checkpoints", "reporting"),
    ("experiment",),
)
FLOOR = {part: i for i, parts in enumerate(FLOORS) for part in parts}


def _part(module: str) -> str:
  """`clipjax.round.algorithm` -> `round`."""
  return module.split(".")[1]


def _imports() -> dict[str, set[str]]:
  """{part: parts it imports}, over every module of the package."""
  graph = collections.defaultdict(set)
  for path in ROOT.rglob("*.py"):
    part = path.relative_to(ROOT).parts[0].removesuffix(".py")
    for node in ast.walk(ast.parse(path.read_text())):
      names = []
      if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module:
        names = [node.module] if node.module != "clipjax" else [
            f"clipjax.{a.name}" for a in node.names]
      for name in names:
        if name.startswith("clipjax.") and _part(name) != part:
          graph[part].add(_part(name))
  return graph


def test_every_part_has_a_floor():
  parts = {p.name.removesuffix(".py") for p in ROOT.iterdir()
           if (p.suffix == ".py" and p.name != "__init__.py") or (p / "__init__.py").exists()}
  assert parts == set(FLOOR), f"parts without a floor: {parts - set(FLOOR)}"


def test_at_most_eight_top_level_modules():
  modules = [p.name for p in ROOT.glob("*.py") if p.name != "__init__.py"]
  assert len(modules) <= 8, sorted(modules)


def test_no_import_from_a_lower_floor_back_up():
  up = [f"{a} (floor {FLOOR[a]}) imports {b} (floor {FLOOR[b]})"
        for a, targets in _imports().items() for b in targets if FLOOR[b] > FLOOR[a]]
  assert not up, "\n".join(up)


def test_no_import_circles_between_parts():
  graph = _imports()
  circles = []
  for start in graph:
    stack = [(start, (start,))]
    while stack:
      node, path = stack.pop()
      for nxt in graph.get(node, ()):
        if nxt == start:
          circles.append(" -> ".join(path + (start,)))
        elif nxt not in path:
          stack.append((nxt, path + (nxt,)))
  assert not circles, "\n".join(sorted(set(circles)))


def test_the_checker_sees_a_back_up_import(tmp_path, monkeypatch):
  """The floor rule is live: a clock module importing the round is reported."""
  fake = tmp_path / "clipjax"
  (fake / "clock").mkdir(parents=True)
  (fake / "clock" / "bad.py").write_text("from clipjax.round import algorithm\n")
  monkeypatch.setattr(__import__(__name__), "ROOT", fake)
  assert _imports() == {"clock": {"round"}}
  assert FLOOR["round"] > FLOOR["clock"]
