"""The uv workspace's members, for tests that check every package (images, deployments)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def workspace_members() -> list[Path]:
    """Each member's directory, as the root ``pyproject.toml`` lists them."""
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    members: list[Path] = []
    for pattern in root["tool"]["uv"]["workspace"]["members"]:
        members += sorted(p.parent for p in ROOT.glob(f"{pattern}/pyproject.toml"))
    return members
