"""The import direction written in docs/ARCHITECTURE.md holds for every import in src/ulfine."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "ulfine"
DOC = REPO / "docs" / "ARCHITECTURE.md"


def read_rules(text: str) -> tuple[dict[str, int], dict[str, set[str]]]:
    """(package -> floor, package -> the only packages it may import) from the doc's block."""
    floors: dict[str, int] = {}
    only: dict[str, set[str]] = {}
    for line in text.splitlines():
        if match := re.fullmatch(r"floor (\d+): (.+)", line.strip()):
            floors.update(dict.fromkeys(match[2].split(), int(match[1])))
        elif match := re.fullmatch(r"only: (\S+) -> (.+)", line.strip()):
            only[match[1]] = set(match[2].split())
    return floors, only


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level ulfine package) of every absolute ``ulfine.*`` import in ``path``,
    including the ones inside functions."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        found += [(node.lineno, name.split(".")[1]) for name in names if name.startswith("ulfine.")]
    return found


def package_of(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def violations(floors: dict[str, int], only: dict[str, set[str]]) -> list[str]:
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = package_of(path)
        if source == "__init__":
            continue
        for line, target in imports(path):
            where = f"{path.relative_to(REPO)}:{line} imports ulfine.{target}"
            if target == source:
                continue
            if source not in floors or target not in floors:
                bad.append(f"{where}: {source if source not in floors else target} has no floor in ARCHITECTURE.md")
            elif floors[target] >= floors[source]:
                bad.append(f"{where}: floor {floors[target]} is not below {source}'s floor {floors[source]}")
            elif source in only and target not in only[source]:
                bad.append(f"{where}: {source} may import only {sorted(only[source])}")
    return bad


def test_imports_follow_the_documented_floors() -> None:
    floors, only = read_rules(DOC.read_text())
    assert floors, "docs/ARCHITECTURE.md has no 'floor N: ...' lines"
    assert violations(floors, only) == []


def test_every_package_has_a_floor() -> None:
    floors, _ = read_rules(DOC.read_text())
    packages = {package_of(p) for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()}
    assert packages - {"__init__"} <= set(floors)


@pytest.mark.parametrize("change, expected", [
    (("floor 1: registry", "floor 3: registry"), "imports ulfine.registry: floor 3 is not below config's floor 2"),
    (("floor 4: methods", "floor 3: methods"), "imports ulfine.models: floor 3 is not below methods's floor 3"),
    (("only: reports -> metrics errors runfolder", "only: reports -> errors runfolder"), "reports may import only"),
])
def test_the_check_catches_a_wrong_direction(change: tuple[str, str], expected: str) -> None:
    """The checker is not vacuous: the documented rules with one line changed are broken by the code."""
    text = DOC.read_text()
    assert change[0] in text
    assert any(expected in v for v in violations(*read_rules(text.replace(change[0], change[1]))))
