"""The package's import direction, read from the source with `ast` (nothing imported, nothing timed):

    cli -> pipeline -> build | verify | publish -> checkpoints -> weights, config, vocab -> errors, report

A module may import its own stage or a lower one, never a higher one; build, verify and publish
never import each other (above all, a verifier shares no code with the builder it checks); and no
import cycle exists inside `export/`.
"""

from __future__ import annotations

import ast
import os

PACKAGE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "export")

# Stage (a module or a sub-package) -> rank. The longest matching prefix decides a module's stage.
STAGES = {
    "export.cli": 6, "export.__main__": 6,
    "export.pipeline": 5, "export.demo": 5,
    "export.build": 4, "export.verify": 4, "export.publish": 4, "export.synthetic": 4,
    "export.checkpoints": 3,
    "export.weights": 2, "export.config": 2, "export.vocab": 2, "export.tasks": 2,
    "export.errors": 1, "export.report": 1, "export.process": 1, "export.faults": 1, "export.progress": 1,
    "export": 0,  # the package root holds __version__ only
}
INDEPENDENT = {"export.build", "export.verify", "export.publish"}


def read_package_sources(directory: str = PACKAGE_DIR) -> dict[str, str]:
    """Dotted module name -> source text, for every .py file of the package."""
    sources = {}
    for root, _, files in os.walk(directory):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                parts = os.path.relpath(path, os.path.dirname(directory))[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts.pop()
                with open(path, encoding="utf-8") as f:
                    sources[".".join(parts)] = f.read()
    return sources


def stage_of(module: str) -> str:
    return max((s for s in STAGES if module == s or module.startswith(s + ".")), key=len)


def imports_of(module: str, source: str, known: set[str]) -> set[str]:
    """The package modules `module` imports anywhere (top level, inside functions, TYPE_CHECKING)."""
    package = module if module + ".__init__" in known else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            # `from export.build import encoder` imports the module export.build.encoder
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found |= {t for t in targets if t == "export" or t.startswith("export.")}
    return found - {module}


def import_graph(sources: dict[str, str]) -> dict[str, set[str]]:
    known = set(sources) | {m + ".__init__" for m in sources if _is_package(m, sources)}
    return {module: imports_of(module, source, known) for module, source in sources.items()}


def _is_package(module: str, sources: dict[str, str]) -> bool:
    return any(other.startswith(module + ".") for other in sources)


def direction_violations(graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for module, targets in sorted(graph.items()):
        mine = stage_of(module)
        for target in sorted(targets):
            theirs = stage_of(target)
            if theirs == mine or target == "export":
                continue
            if STAGES[theirs] > STAGES[mine]:
                problems.append(f"{module} imports {target}: {mine} must not depend on {theirs}")
            elif mine in INDEPENDENT and theirs in INDEPENDENT:
                problems.append(f"{module} imports {target}: {mine} and {theirs} are independent stages")
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_module_belongs_to_a_stage():
    sources = read_package_sources()
    assert len(sources) > 20
    unplaced = sorted(m for m in sources if stage_of(m) == "export" and m != "export")
    assert unplaced == [], f"give these modules a stage in STAGES: {unplaced}"


def test_imports_point_one_way():
    assert direction_violations(import_graph(read_package_sources())) == []


def test_no_import_cycle_inside_the_package():
    assert cycles(import_graph(read_package_sources())) == []


def test_a_planted_wrong_import_is_caught():
    """The checks bite: a reader importing a builder, a builder importing a verifier, and the old
    weights <-> checkpoints cycle are each reported."""
    sources = read_package_sources()
    planted = dict(sources)
    planted["export.checkpoints.hf"] += "\nfrom export.build.encoder import INPUT_NAMES\n"
    planted["export.build.encoder"] += "\ndef f():\n    from export.verify import reference\n"
    planted["export.weights"] += "\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n" \
                                 "    from export.checkpoints import CheckpointReader\n"
    problems = direction_violations(import_graph(planted))
    assert any(p.startswith("export.checkpoints.hf imports export.build.encoder") for p in problems), problems
    assert any(p.startswith("export.build.encoder imports export.verify.reference") for p in problems), problems
    assert any(p.startswith("export.weights imports export.checkpoints") for p in problems), problems
    assert any({"export.weights", "export.checkpoints"} <= set(c) for c in cycles(import_graph(planted)))
