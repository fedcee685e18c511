"""The package's shape, enforced: which part may import which library.

* only `bridge/asterisk/` imports panoramisk;
* only `bridge/slack/` imports slack_bolt and slack_sdk;
* only `bridge/store/` imports the PostgreSQL driver (psycopg, psycopg_pool);
* `bridge/core/` imports none of them, nor aiohttp, nor sqlite3, nor any other part of the
  bridge: it is testable from plain values.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "bridge"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _modules() -> dict[str, set[str]]:
    return {str(p.relative_to(PACKAGE.parent)): _imports(p) for p in PACKAGE.rglob("*.py")}


def _importers(prefixes: tuple[str, ...]) -> set[str]:
    return {module for module, names in _modules().items()
            if any(n == p or n.startswith(p + ".") for n in names for p in prefixes)}


def test_the_walk_sees_the_package() -> None:
    modules = _modules()
    assert "bridge/asterisk/ami.py" in modules and "panoramisk" in modules["bridge/asterisk/ami.py"]
    assert len(modules) > 40


def test_only_the_asterisk_side_imports_panoramisk() -> None:
    offenders = {m for m in _importers(("panoramisk",)) if not m.startswith("bridge/asterisk/")}
    assert not offenders


def test_only_the_slack_side_imports_slack_libraries() -> None:
    offenders = {m for m in _importers(("slack_bolt", "slack_sdk"))
                 if not m.startswith("bridge/slack/")}
    assert not offenders


def test_only_the_store_imports_the_postgresql_driver() -> None:
    offenders = {m for m in _importers(("psycopg", "psycopg_pool"))
                 if not m.startswith("bridge/store/")}
    assert not offenders


def test_the_core_imports_no_io_library_and_no_other_part() -> None:
    for module, names in _modules().items():
        if not module.startswith("bridge/core/"):
            continue
        forbidden = {n for n in names
                     if n.split(".")[0] in ("panoramisk", "slack_bolt", "slack_sdk", "aiohttp",
                                            "sqlite3", "psycopg", "asyncpg")
                     or (n.startswith("bridge.") and not n.startswith("bridge.core"))}
        assert not forbidden, f"{module} imports {sorted(forbidden)}"


def test_the_readme_layout_names_every_module() -> None:
    readme = (PACKAGE.parent / "README.md").read_text("utf-8")
    layout = readme[readme.index("## Layout"):]
    missing = [m for m in _modules() if not m.endswith("__init__.py") and f"`{m}`" not in layout]
    assert not missing, f"README's layout table misses {missing}"
