"""The layering in docs/architecture.md, checked: the CLI sits on top of the library, modules stay small."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "core"
LONG_MODULE_LINES = 520
LONG_MODULE_REASON = "Over 500 lines because"


def _imports(path: Path) -> list[str]:
    """Every module a file imports, resolved to a dotted path relative to the repository root."""
    tree = ast.parse(path.read_text())
    package = list(path.relative_to(REPO).with_suffix("").parts[:-1])
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            names.append(mod)
            names.extend(f"{mod}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
    return names


def test_the_library_never_imports_the_command_line():
    offenders = []
    for path in CORE.rglob("*.py"):
        if "cli" in path.relative_to(CORE).parts:
            continue
        bad = [
            m
            for m in _imports(path)
            if m == "core.cli" or m.startswith("core.cli.") or "identitylock.core.cli" in m
        ]
        if bad:
            offenders.append(f"{path.relative_to(REPO)}: {bad}")
    assert offenders == []


def test_the_command_line_lives_in_one_package():
    assert sorted(p.name for p in CORE.glob("*_cli.py")) == []
    assert (CORE / "cli" / "__init__.py").is_file() and (CORE / "cli" / "__main__.py").is_file()


def test_long_modules_state_why():
    long_ones = []
    for folder in (CORE, REPO / "nodes"):
        for path in folder.rglob("*.py"):
            text = path.read_text()
            if text.count("\n") > LONG_MODULE_LINES and LONG_MODULE_REASON not in text:
                long_ones.append(f"{path.relative_to(REPO)} ({text.count(chr(10))} lines)")
    assert long_ones == [], f"split these along their seams, or say '{LONG_MODULE_REASON} ...': {long_ones}"


def test_one_spelling_where_users_see_it():
    """ComfyUI and Python spell "color" and "analyze"; a British alias is allowed only where marked as one."""
    import re

    pattern = re.compile(r"colour|analys(e|ed|es|ing)\b", re.IGNORECASE)
    places = [
        REPO / "README.md",
        *REPO.glob("docs/*.md"),
        *REPO.glob("workflows/**/*.json"),
        *REPO.glob("web/*.js"),
    ]
    places += [*CORE.rglob("*.py"), *(REPO / "nodes").rglob("*.py")]
    found = [
        f"{p.relative_to(REPO)}:{i}: {line.strip()[:80]}"
        for p in places
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line.replace("analyses", "")) and "alias" not in line
    ]
    assert found == []
