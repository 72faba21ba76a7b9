"""The product's packages import no dev tooling: the simulator, the tests and the
benchmarks live beside them, and are not installed with them."""

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("assets", "pipeline_defs", "resources")
DEV_TOOLING = {"simulator", "tests", "bench"}


def imported_packages(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_product_code_imports_no_dev_tooling():
    files = [f for package in PRODUCT for f in sorted((ROOT / package).rglob("*.py"))]
    assert len(files) > 50  # the walk found the packages
    offending = {str(f.relative_to(ROOT)): sorted(imported_packages(f) & DEV_TOOLING)
                 for f in files if imported_packages(f) & DEV_TOOLING}
    assert offending == {}


def test_dev_tooling_is_not_installed_with_the_product():
    """pyproject's package list names the product's packages and nothing else."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    included = config["tool"]["setuptools"]["packages"]["find"]["include"]
    assert sorted(included) == sorted(f"{package}*" for package in PRODUCT)
