"""environment.yml (conda) and pyproject.toml (pip) must pin the same dependencies."""
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pip_section(env: dict) -> list[str]:
    return next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)


def test_environment_yml_agrees_with_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"]) | set(project["optional-dependencies"]["test"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = {d for d in _pip_section(env) if not d.startswith("-e")}
    assert pip == wanted, f"only in environment.yml: {pip - wanted}; only in pyproject: {wanted - pip}"
    assert "python=3.11" in env["dependencies"]


def test_torch_is_pinned_exactly():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "torch==2.13.0" in project["dependencies"]
    assert all("==" in d for d in project["dependencies"])
