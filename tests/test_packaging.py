"""The project installs with a pinned build backend and no deprecated metadata, and every
package of `engine/` is packaged (a folder without `__init__.py` is left out of a wheel)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_build_backend_is_pinned() -> None:
    requires = PYPROJECT["build-system"]["requires"]
    assert requires and all("==" in req for req in requires), requires


def test_the_license_is_an_spdx_string() -> None:
    assert PYPROJECT["project"]["license"] == "Apache-2.0"


def test_every_engine_folder_with_code_is_a_package() -> None:
    folders = {
        ".".join(path.parent.relative_to(ROOT).parts)
        for path in (ROOT / "engine").rglob("*.py")
        if "__pycache__" not in path.parts
    }
    packaged = set(find_packages(str(ROOT), include=["engine*"]))
    assert folders <= packaged, sorted(folders - packaged)
