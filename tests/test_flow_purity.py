"""The call flow does no I/O: it imports nothing that could, directly or indirectly."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

FLOW = Path(__file__).resolve().parents[1] / "engine" / "flow"
FORBIDDEN = {
    "asyncio",
    "threading",
    "socket",
    "sqlite3",
    "subprocess",
    "time",
    "os",
    "io",
    "pathlib",
    "shutil",
    "select",
    "selectors",
    "signal",
    "random",
    "urllib",
    "http",
    "httpx",
    "pjsua2",
    "soundfile",
    "numpy",
    "logging",
    "multiprocessing",
    "zoneinfo",
}
RULES = Path(__file__).resolve().parents[1] / "engine" / "rules"
MODEL = Path(__file__).resolve().parents[1] / "engine" / "model.py"
ALLOWED_ENGINE = {"engine.flow", "engine.model", "engine.rules"}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_flow_modules_import_no_io() -> None:
    modules = sorted(FLOW.glob("*.py"))
    assert len(modules) >= 6
    for module in modules:
        for name in _imports(module):
            top = name.split(".")[0]
            assert top not in FORBIDDEN, f"{module.name} imports {name}"
            if top == "engine":
                assert any(name.startswith(ok) for ok in ALLOWED_ENGINE), f"{module.name}: {name}"


def test_rules_import_no_io_and_nothing_of_the_engine() -> None:
    modules = sorted(RULES.glob("*.py"))
    assert len(modules) >= 3
    for module in modules:
        for name in _imports(module):
            assert name.split(".")[0] not in FORBIDDEN, f"{module.name} imports {name}"
            assert not name.startswith("engine"), f"{module.name} imports {name}"


def test_the_model_imports_nothing_of_the_flow() -> None:
    """The model validates with `engine.rules`; the flow imports the model, never back."""
    names = _imports(MODEL)
    assert "engine.rules.pin" in names
    assert not [name for name in names if name.startswith("engine.flow")]
    probe = "import sys, engine.model; print(sorted(m for m in sys.modules if m.startswith('engine.flow')))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_importing_the_flow_loads_no_io_library() -> None:
    """Transitively, too: no SIP stack, HTTP client, database or event loop gets loaded."""
    probe = (
        "import sys, engine.flow.callflow;"
        "bad = {'pjsua2', 'httpx', 'sqlite3', 'asyncio', 'soundfile', 'engine.runtime'};"
        "print(sorted(bad & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_check_catches_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import socket\nfrom engine.runtime import x\n")
    names = _imports(bad)
    assert "socket" in names and "engine.runtime" in names
