"""The package's import graph, read from the source (every import, including those inside functions): `fdrl.data`
and `fdrl.evaluation` never import `fdrl.training`, and no two subpackages import each other, directly or through
others. The flat remote-code files never import the package."""

import ast
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "fdrl"
REMOTE_CODE = ("configuration_fdrl", "modeling_fdrl", "processing_fdrl", "pipeline_fdrl")


def imported_modules(path):
    """Every module `path` imports, as absolute dotted names (relative imports resolved)."""
    module = ".".join(path.relative_to(REPO).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names.add(".".join(base + ([node.module] if node.module else [])))
            else:
                names.add(node.module)
    return names


def subpackage(module):
    """`fdrl.data.manifest` -> `data`; top-level modules of the package (`fdrl.presets`) are their own node."""
    parts = module.split(".")
    return parts[1] if parts[0] == "fdrl" and len(parts) > 1 else None


def subpackage_graph():
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        source = subpackage(".".join(path.relative_to(REPO).with_suffix("").parts))
        for name in imported_modules(path):
            target = subpackage(name)
            if source and target and target != source:
                graph.setdefault(source, set()).add(target)
    return graph


def test_the_parser_sees_imports_inside_functions(tmp_path):
    module = REPO / "fdrl" / "data" / "corpus.py"
    assert "fdrl.data.iemocap" in imported_modules(module)  # imported inside load_corpus
    assert "fdrl.data.manifest" in imported_modules(module)


@pytest.mark.parametrize("low", ["data", "evaluation"])
def test_data_and_evaluation_never_import_training(low):
    assert "training" not in subpackage_graph().get(low, set())


def test_no_cycle_between_subpackages():
    graph = subpackage_graph()
    assert {"data", "training", "evaluation", "presets"} <= set(graph) | {t for ts in graph.values() for t in ts}

    def reachable(start):
        seen, stack = set(), [start]
        while stack:
            for target in graph.get(stack.pop(), ()):
                if target not in seen:
                    seen.add(target)
                    stack.append(target)
        return seen

    cycles = sorted(node for node in graph if node in reachable(node))
    assert cycles == [], f"subpackages on an import cycle: {cycles}"


@pytest.mark.parametrize("name", REMOTE_CODE)
def test_remote_code_never_imports_the_package(name):
    """A model repository on the Hub carries these files without the `fdrl` package."""
    imported = {module.split(".")[0] for module in imported_modules(REPO / f"{name}.py") if module}
    assert "fdrl" not in imported and {"torch", "transformers"} & imported
