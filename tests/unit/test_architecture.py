"""The house rules, read off the source: floors, no import circles, small modules, one owner
for each shared literal. A change that breaks one fails here with the module that broke it."""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "pefty_whisper"
MAX_LINES = 500

# Floors, lowest first: a module imports only from its own floor or below.
FLOORS = (
    ("errors", "files", "metrics", "intervals", "subsets", "ranks"),  # leaves
    ("whisper",),  # the ground floor: what a Whisper model directory is
    ("config",),
    ("data", "workspace"),
    # the stages
    ("inference", "label", "train", "merge", "export", "evaluate", "card", "hub", "tracking"),
    ("serve", "serve_page", "web", "demo"),
    ("cli",),
)


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules `path` imports, anywhere in it (function-level imports count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("pefty_whisper"):
                found.add(node.module)
                found |= {f"{node.module}.{a.name}" for a in node.names} & set(modules)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("pefty_whisper")}
    return found & set(modules)


def _floor(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        # The package's __init__: the public API, imported lazily (see the test below), so
        # `from pefty_whisper import __version__` costs any floor nothing.
        return 0
    for index, names in enumerate(FLOORS):
        if parts[1] in names:
            return index
    raise AssertionError(f"{module}: not on any floor; add its folder to FLOORS")


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def test_no_module_imports_from_a_floor_above_its_own() -> None:
    upward = [
        f"{module} (floor {_floor(module)}) imports {target} (floor {_floor(target)})"
        for module, targets in sorted(_graph().items())
        if module != "pefty_whisper"  # the public API names every floor's exports
        for target in sorted(targets)
        if _floor(target) > _floor(module)
    ]
    assert not upward, "\n".join(upward)


def test_the_ground_floor_imports_only_the_leaves() -> None:
    allowed = {"pefty_whisper.errors", "pefty_whisper.files"}
    wrong = [
        f"{module} imports {target}"
        for module, targets in _graph().items()
        if module.startswith("pefty_whisper.whisper")
        for target in targets
        if not target.startswith("pefty_whisper.whisper") and target not in allowed
    ]
    assert not wrong, "\n".join(wrong)


def test_the_public_api_imports_its_names_only_when_used() -> None:
    init = (PACKAGE / "__init__.py").read_text(encoding="utf-8")
    tree = ast.parse(init)
    eager = [
        node.module
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pefty_whisper")
    ]
    assert not eager
    import pefty_whisper

    for name in pefty_whisper.__all__:
        assert getattr(pefty_whisper, name) is not None, name


def test_there_is_no_import_circle() -> None:
    graph = _graph()
    # A package's __init__ re-exports its submodules; a submodule importing its own package
    # would be a circle, and is caught here like any other.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert not circles, circles


def test_no_library_module_is_over_500_lines() -> None:
    long = {
        str(path.relative_to(PACKAGE)): count
        for path in PACKAGE.rglob("*.py")
        if (count := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, long


def _code_literals(path: Path) -> list[str]:
    """String and number literals outside docstrings and comments."""
    source = path.read_text(encoding="utf-8")
    docstrings = {
        (node.body[0].lineno, node.body[0].col_offset)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
        and isinstance(node.body[0].value.value, str)
    }
    return [
        token.string
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type in (tokenize.STRING, tokenize.NUMBER) and token.start not in docstrings
    ]


@pytest.mark.parametrize(
    ("literal", "owner"),
    [
        ('"model.bin"', "whisper/model_dir.py"),  # CTranslate2's weights: ModelDir owns the name
        ("448", "whisper/tokens.py"),  # Whisper's decoder positions: WhisperTokens owns the cap
        ('"encoder_model.onnx"', "whisper/model_dir.py"),
    ],
)
def test_each_shared_literal_is_written_once_by_its_owner(literal: str, owner: str) -> None:
    places = [
        str(path.relative_to(PACKAGE))
        for path in sorted(PACKAGE.rglob("*.py"))
        for found in _code_literals(path)
        if found == literal
    ]
    assert places == [owner]


def test_eval_names_are_made_only_by_the_eval_label() -> None:
    # `<set>@<variant>` and the variant words are built and parsed by workspace.EvalLabel only.
    places = [
        str(path.relative_to(PACKAGE))
        for path in sorted(PACKAGE.rglob("*.py"))
        for found in _code_literals(path)
        if any(word in found for word in ("lang-", "context-", "first-", "cond-", "}@", "@{"))
    ]
    assert set(places) <= {"workspace/layout.py"}, places
