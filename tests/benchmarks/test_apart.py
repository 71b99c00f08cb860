"""The tools stay apart from the product (STYLE habit 17): no installed module imports `benchmarks`."""
from __future__ import annotations

import ast

from tests.conftest import REPO

PRODUCT = ("charrnn", "runcontract", "study", "reports")  # pyproject.toml's [tool.setuptools.packages.find]


def _imports(path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_no_product_module_imports_a_benchmark():
    offenders = [f"{path.relative_to(REPO)}: {name}"
                 for package in PRODUCT for path in sorted((REPO / package).rglob("*.py"))
                 for name in _imports(path) if name.split(".")[0] == "benchmarks"]
    assert not offenders, offenders


def test_benchmarks_are_not_installed():
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    include = next(line for line in pyproject.splitlines() if line.startswith("include"))
    assert "benchmarks" not in include and all(f'"{p}*"' in include for p in PRODUCT)
