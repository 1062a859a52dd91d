"""The package's shape, derived from its own imports: no import circle anywhere, and no module importing a layer
above its own (data, models, methods and training below the evaluators; the report above them, torch-free; bench,
spiral and the command line on top). Every first-party import counts, at the top of a file or inside a function."""

from __future__ import annotations

import ast

from conftest import ROOT

PACKAGE = ROOT / "mmix_eval"
# Lowest first. A module may import its own layer and the layers below it, never one above.
LAYERS = [
    {
        "__init__",
        "errors",
        "io",
        "registry",
        "catalog",
        "trust",
        "options",
        "upgrade",
        "config",
        "schedule",
        "device",
        "threads",
        "memory",
        "provenance",
    },
    {"data", "calibrators"},
    {"models"},
    {"methods"},
    {"checkpoint", "checkpoint_meta", "inference", "distributed", "hub"},
    {"foreign", "training"},
    {"evaluate"},
    {"report", "results", "hub_push", "export"},
    {"bench", "spiral"},
    {"cli", "__main__"},
]


def module_graph() -> dict[str, set[str]]:
    """module -> the first-party modules it imports ('from package import submodule' counts as the submodule)."""
    files = {
        ".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): f for f in PACKAGE.rglob("*.py")
    }
    graph = {}
    for name, f in files.items():
        deps = set()
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("mmix_eval"):
                deps |= {
                    f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files else node.module for a in node.names
                }
            elif isinstance(node, ast.ImportFrom) and node.level:
                raise AssertionError(f"{name}: a relative import; the package imports by absolute name")
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("mmix_eval")}
        graph[name] = {d for d in deps if d in files and d != name}
    return graph


def top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer(module: str) -> int:
    for i, names in enumerate(LAYERS):
        if top(module) in names:
            return i
    raise AssertionError(f"{module}: in no layer of this test; add its top-level name to LAYERS")


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    seen, stack = set(), []

    def visit(m):
        if m in stack:
            return stack[stack.index(m) :] + [m]
        if m in seen:
            return None
        stack.append(m)
        for d in sorted(graph[m]):
            cycle = visit(d)
            if cycle:
                return cycle
        stack.pop()
        seen.add(m)
        return None

    for m in sorted(graph):
        cycle = visit(m)
        if cycle:
            return cycle
    return None


def test_the_graph_sees_imports_inside_functions_and_finds_a_planted_circle():
    graph = module_graph()
    assert (
        "mmix_eval.training.loop" in graph["mmix_eval.bench.job"] | graph["mmix_eval.training"]
    )  # a function-level import counts
    assert len(graph) > 80
    planted = {**graph, "mmix_eval.errors": graph["mmix_eval.errors"] | {"mmix_eval.cli"}}
    cycle = find_cycle(planted)
    assert cycle is not None and "mmix_eval.errors" in cycle


def test_no_import_circle_in_the_package():
    cycle = find_cycle(module_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_no_module_imports_a_layer_above_its_own():
    upward = [
        f"{m} ({top(m)}) imports {d} ({top(d)})"
        for m, deps in module_graph().items()
        for d in sorted(deps)
        if layer(d) > layer(m)
    ]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_the_layer_check_catches_an_upward_import():
    assert layer("mmix_eval.evaluate.target") > layer("mmix_eval.foreign")  # the old foreign -> evaluate.target arrow
    assert layer("mmix_eval.report.build") > layer("mmix_eval.evaluate.records")
    assert layer("mmix_eval.cli") == len(LAYERS) - 1


EVALUATORS = "mmix_eval.evaluate.evaluators"


def framework_imports_of_evaluators(graph: dict[str, set[str]]) -> list[str]:
    """Framework modules of evaluate/ (everything outside evaluate/evaluators/) that import an evaluator."""
    framework = [m for m in graph if m.startswith("mmix_eval.evaluate") and not m.startswith(EVALUATORS)]
    return [f"{m} imports {d}" for m in framework for d in sorted(graph[m]) if d.startswith(EVALUATORS)]


def test_the_evaluate_framework_imports_no_evaluator():
    graph = module_graph()
    evaluators = [m for m in graph if m.startswith(EVALUATORS + ".")]
    assert {"mmix_eval.evaluate.evaluators.ood", "mmix_eval.evaluate.evaluators.attacks.fgsm"} <= set(evaluators)
    assert not [
        m
        for m in graph
        if m.startswith("mmix_eval.evaluate.")
        and not m.startswith(EVALUATORS)
        and m.rsplit(".", 1)[1] in {"ood", "shift", "fgsm", "spectra", "calibration", "deformations"}
    ]
    found = framework_imports_of_evaluators(graph)
    assert not found, "the framework imports an evaluator:\n" + "\n".join(found)
    planted = {**graph, "mmix_eval.evaluate.runner": graph["mmix_eval.evaluate.runner"] | {EVALUATORS + ".ood"}}
    assert framework_imports_of_evaluators(planted) == [f"mmix_eval.evaluate.runner imports {EVALUATORS}.ood"]


MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60


def oversized(package) -> list[str]:
    """Files over MAX_FILE_LINES lines, and functions whose code (from the first statement after the docstring to
    the end: a signature the formatter puts one parameter per line, and the docstring, are not counted) runs over
    MAX_FUNCTION_LINES lines."""
    found = []
    for f in sorted(package.rglob("*.py")):
        src = f.read_text(encoding="utf-8")
        if src.count("\n") > MAX_FILE_LINES:
            found.append(f"{f.relative_to(package)}: {src.count(chr(10))} lines")
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = node.body
                if len(body) > 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                    body = body[1:]
                if node.end_lineno - body[0].lineno + 1 > MAX_FUNCTION_LINES:
                    found.append(f"{f.relative_to(package)}:{node.lineno} {node.name}")
    return found


def test_every_file_and_function_of_the_package_within_its_size(tmp_path):
    assert oversized(PACKAGE) == []
    long_body = "def f(x):\n    '''doc'''\n" + "    x += 1\n" * (MAX_FUNCTION_LINES + 1)  # 61 lines of code: found
    (tmp_path / "a.py").write_text(long_body)
    (tmp_path / "b.py").write_text("x = 1\n" * (MAX_FILE_LINES + 1))
    signature = (
        "def g(\n" + "    a=1,\n" * 30 + "):\n    '''" + "doc\n" * 30 + "'''\n" + "    a += 1\n" * 59 + "    return a\n"
    )
    (tmp_path / "c.py").write_text(signature)  # a long signature and docstring, 60 lines of code: within
    assert oversized(tmp_path) == ["a.py:1 f", "b.py: 401 lines"]
