"""The layers keep to themselves: `edge` and `hub` never import each other, `shared` imports neither,
and every SQL statement of a package lives in its catalog layer (`edge/catalog.py`,
`hub/catalog/`, and the SQLite helpers in `shared/sqlite.py`): nothing else imports sqlite3 or
calls `execute`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {"edge": {"hub"}, "hub": {"edge"}, "shared": {"edge", "hub"}}
CATALOG_LAYER = ("edge/catalog.py", "hub/catalog/", "shared/sqlite.py")
SQL_CALLS = {"execute", "executemany", "executescript"}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def sql_outside_the_catalog(path: Path) -> list[str]:
    """What a module does that only the catalog layer may: import sqlite3, call `.execute(...)`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    if "sqlite3" in imported_packages(path):
        found.append("imports sqlite3")
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SQL_CALLS:
            found.append(f"line {node.lineno}: calls .{node.func.attr}()")
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_what_it_may(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no modules"
    for path in files:
        bad = imported_packages(path) & FORBIDDEN[package]
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_sql_only_in_the_catalog_layer(package: str) -> None:
    problems = []
    for path in sorted((ROOT / package).rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        if name.startswith(CATALOG_LAYER):
            continue
        problems += [f"{name}: {what}" for what in sql_outside_the_catalog(path)]
    assert not problems, "SQL outside the catalog layer:\n" + "\n".join(problems)


def test_the_checks_catch_a_violation(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import sqlite3\nfrom hub import api\nimport edge.camera\n\n"
                      "def f(conn):\n    conn.execute('SELECT 1')\n    conn.executemany('x', [])\n")
    assert imported_packages(module) == {"hub", "edge", "sqlite3"}
    assert sql_outside_the_catalog(module) == ["imports sqlite3", "line 6: calls .execute()",
                                               "line 7: calls .executemany()"]
