"""The house rules: docs/architecture.md's folder table is the law, and the code keeps it.

The table names every home (a folder, or the one loose module ``pipeline/errors.py``), what
lives there and which homes it may import. These tests read that table, read every import in
``pipeline/``, ``gateway/`` and ``urldsl/`` (module-level, function-level and ``TYPE_CHECKING``
imports alike: a lazy import is still an arrow), and check:

- every import points to its own home or to one the table allows;
- no two modules import each other, directly or round a longer loop;
- the *pure* homes import no I/O library;
- the table names exactly the folders there are, and ``pipeline/`` holds no loose module but
  ``__init__.py``, ``__main__.py`` and ``errors.py``.

The checker itself is tested on a made-up house with a broken rule, so a checker that finds
nothing cannot pass for a house that keeps every rule.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TABLE_DOC = ROOT / "docs" / "architecture.md"
PACKAGES = ("pipeline", "gateway", "urldsl")
LOOSE_OK = {"__init__.py", "__main__.py", "errors.py"}
ENTRY = {"pipeline/__main__.py": {"pipeline/cli/", "pipeline/workers/"}}
"""Files outside every home, with the homes they may import (``python -m pipeline``)."""

IO_LIBRARIES = frozenset(
    {
        "asyncio",
        "threading",
        "socket",
        "subprocess",
        "nats",
        "av",
        "aiortc",
        "starlette",
        "uvicorn",
        "httpx",
        "boto3",
        "botocore",
        "docker",
    }
)
"""What a *pure* home may not import."""


@dataclass(frozen=True)
class Home:
    path: str
    what: str
    """``pipeline/state/`` (a folder) or ``pipeline/errors.py`` (a file), from the repo root."""
    may_import: frozenset[str] | None
    """Paths of the homes it may import; None: any home."""
    pure: bool


def _home_path(name: str) -> str:
    if name == "errors":
        return "pipeline/errors.py"
    if name in ("gateway", "urldsl"):
        return f"{name}/"
    return f"pipeline/{name}/"


def read_table(text: str) -> dict[str, Home]:
    """The homes of the folder table (the one with a ``may import`` column)."""
    homes: dict[str, Home] = {}
    rows = iter(text.splitlines())
    for line in rows:
        if line.startswith("| folder | what lives there | may import |"):
            break
    else:
        raise AssertionError("docs/architecture.md has no '| folder | ... | may import |' table")
    next(rows)  # the | --- | line
    for line in rows:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) == 3, f"a row of the folder table has {len(cells)} cells: {line}"
        folder, what, allowed = cells
        path = folder.strip("`")
        if allowed == "any home":
            may: frozenset[str] | None = None
        elif allowed == "nothing":
            may = frozenset()
        else:
            may = frozenset(_home_path(n) for n in re.findall(r"`([a-z_]+)`", allowed))
        homes[path] = Home(path, what, may, what.startswith("*pure*"))
    return homes


def home_of(file: str, homes: Iterable[str]) -> str | None:
    """The home holding ``file`` (the longest path that holds it), or None."""
    best = None
    for home in homes:
        held = file == home if home.endswith(".py") else file.startswith(home)
        if held and (best is None or len(home) > len(best)):
            best = home
    return best


def _module_files(root: Path) -> dict[str, str]:
    """Dotted module name → file path from the repo root, for our packages."""
    out: dict[str, str] = {}
    for package in PACKAGES:
        for file in (root / package).rglob("*.py"):
            rel = file.relative_to(root)
            parts = list(rel.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = rel.as_posix()
    return out


def import_graph(root: Path) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(file → files of ours it imports, file → top-level names of every library it imports)."""
    modules = _module_files(root)
    arrows: dict[str, set[str]] = {}
    libraries: dict[str, set[str]] = {}
    for name, file in modules.items():
        is_package = file.endswith("__init__.py")
        tree = ast.parse((root / file).read_text(), file)
        targets: list[str] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    module = ".".join([*base, node.module] if node.module else base)
                else:
                    module = node.module or ""
                for alias in node.names:
                    # `from pipeline.nats import subjects` imports the module subjects.
                    sub = f"{module}.{alias.name}"
                    targets.append(sub if sub in modules else module)
        arrows[file] = {modules[t] for t in targets if t in modules and modules[t] != file}
        libraries[file] = {t.split(".")[0] for t in targets if t.split(".")[0] not in PACKAGES}
    return arrows, libraries


def violations(
    arrows: Mapping[str, Iterable[str]],
    libraries: Mapping[str, Iterable[str]],
    homes: Mapping[str, Home],
) -> list[str]:
    """Every broken rule, one line each."""
    found: list[str] = []
    for source, targets in sorted(arrows.items()):
        if source in ENTRY:
            allowed: frozenset[str] | None = frozenset(ENTRY[source])
            own = None
        else:
            own = home_of(source, homes)
            if own is None:
                if not source.endswith("__init__.py") or source.count("/") != 1:
                    found.append(f"{source} is in no home of the folder table")
                continue
            allowed = homes[own].may_import
        for target in sorted(targets):
            theirs = home_of(target, homes)
            if theirs is None and target.endswith("__init__.py") and target.count("/") == 1:
                continue  # a package's face (pipeline/__init__.py): empty
            if theirs == own or allowed is None:
                continue
            if theirs not in allowed:
                found.append(f"{source} imports {target}: {own or source} may not import {theirs}")
        if own is not None and homes[own].pure:
            for library in sorted(set(libraries.get(source, ())) & IO_LIBRARIES):
                found.append(f"{source} imports {library}: {own} is pure (no I/O)")
    for loop in circles(arrows):
        found.append("import circle: " + " -> ".join(loop))
    return found


def circles(arrows: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one file (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for start in sorted(arrows):
        if start in index:
            continue
        work = [(start, iter(sorted(arrows.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(arrows.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        out.append(sorted(group))
    return out


# --- the house as it stands --------------------------------------------------------------------


def test_every_import_keeps_the_folder_table() -> None:
    homes = read_table(TABLE_DOC.read_text())
    arrows, libraries = import_graph(ROOT)
    broken = violations(arrows, libraries, homes)
    assert not broken, "house rules broken:\n" + "\n".join(broken)


def test_the_table_names_exactly_the_folders_there_are() -> None:
    homes = read_table(TABLE_DOC.read_text())
    tree = {"gateway/", "urldsl/", "pipeline/errors.py"}
    tree |= {
        f"pipeline/{d.name}/" for d in (ROOT / "pipeline").iterdir() if (d / "__init__.py").exists()
    }
    assert set(homes) == tree, (
        f"in the table but not the tree: {sorted(set(homes) - tree)}; "
        f"in the tree but not the table: {sorted(tree - set(homes))}"
    )
    loose = {f.name for f in (ROOT / "pipeline").glob("*.py")}
    assert loose <= LOOSE_OK, f"loose modules in pipeline/: {sorted(loose - LOOSE_OK)}"


def test_every_module_the_table_names_is_in_its_folder() -> None:
    """A row's ``x.py`` names are files of that folder (at any depth), so a move or a rename
    that leaves the table behind fails here."""
    homes = read_table(TABLE_DOC.read_text())
    missing = []
    for home in homes.values():
        if home.path.endswith(".py"):
            continue
        for name in re.findall(r"`([\w/]+\.py)`", home.what):
            if not any((ROOT / home.path).rglob(name)):
                missing.append(f"{home.path}{name}")
    assert not missing, f"named in docs/architecture.md's folder table, not in the tree: {missing}"


def test_the_table_only_allows_homes_that_exist_and_lie_below() -> None:
    """``may import`` names real homes, and only ones further down the table (so the table is
    an order of layers, not a web)."""
    homes = read_table(TABLE_DOC.read_text())
    order = list(homes)
    for position, home in enumerate(order):
        for allowed in homes[home].may_import or ():
            assert allowed in homes, f"{home} may import {allowed}, which is no home"
            assert order.index(allowed) > position, f"{home} may import {allowed}, drawn above it"


# --- the checker, on a made-up house -----------------------------------------------------------

_MADE_UP = """
| folder | what lives there | may import |
| --- | --- | --- |
| `pipeline/cli/` | commands | any home |
| `pipeline/producers/` | grabbers | `state`, `errors` |
| `pipeline/consumers/` | stitchers | `state`, `errors` |
| `pipeline/state/` | *pure*: folds | `errors` |
| `pipeline/errors.py` | *pure*: errors | nothing |
"""


def test_the_checker_reports_each_kind_of_broken_rule() -> None:
    homes = read_table(_MADE_UP)
    arrows = {
        "pipeline/cli/main.py": {"pipeline/consumers/stitcher.py"},  # any home: fine
        "pipeline/producers/grabber.py": {"pipeline/state/model.py", "pipeline/errors.py"},
        "pipeline/consumers/stitcher.py": {"pipeline/producers/grabber.py"},  # sideways
        "pipeline/state/model.py": {"pipeline/cli/main.py"},  # up
        "pipeline/state/evolve.py": {"pipeline/state/fold.py"},
        "pipeline/state/fold.py": {"pipeline/state/evolve.py"},  # a circle inside one home
        "pipeline/errors.py": set(),
        "pipeline/loose.py": set(),  # in no home
    }
    libraries = {"pipeline/state/model.py": {"msgspec", "asyncio"}}
    found = violations(arrows, libraries, homes)
    assert found == [
        "pipeline/consumers/stitcher.py imports pipeline/producers/grabber.py: "
        "pipeline/consumers/ may not import pipeline/producers/",
        "pipeline/loose.py is in no home of the folder table",
        "pipeline/state/model.py imports pipeline/cli/main.py: "
        "pipeline/state/ may not import pipeline/cli/",
        "pipeline/state/model.py imports asyncio: pipeline/state/ is pure (no I/O)",
        "import circle: pipeline/cli/main.py -> pipeline/consumers/stitcher.py -> "
        "pipeline/producers/grabber.py -> pipeline/state/model.py",
        "import circle: pipeline/state/evolve.py -> pipeline/state/fold.py",
    ]


def test_the_checker_follows_lazy_and_submodule_imports(tmp_path: Path) -> None:
    """A function-level ``from pipeline.x import module`` is an arrow to that module."""
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "pipeline" / "state").mkdir()
    (tmp_path / "pipeline" / "state" / "__init__.py").write_text("")
    (tmp_path / "pipeline" / "state" / "model.py").write_text(
        "def later():\n    from pipeline.cli import main\n    import asyncio\n"
    )
    (tmp_path / "pipeline" / "cli").mkdir()
    (tmp_path / "pipeline" / "cli" / "__init__.py").write_text("")
    (tmp_path / "pipeline" / "cli" / "main.py").write_text("from . import helpers\n")
    (tmp_path / "pipeline" / "cli" / "helpers.py").write_text("")
    arrows, libraries = import_graph(tmp_path)
    assert arrows["pipeline/state/model.py"] == {"pipeline/cli/main.py"}
    assert arrows["pipeline/cli/main.py"] == {"pipeline/cli/helpers.py"}
    assert libraries["pipeline/state/model.py"] == {"asyncio"}
