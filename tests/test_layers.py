"""The architecture, enforced: one-way layers in the core and the allowed arrows between packages.

Every import counts — module level, function level and under ``TYPE_CHECKING`` — because a
circle hidden from the interpreter is still a circle for the reader and for the types.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("tracewire", "middleware", "sinks")

# Core layers, bottom first: a module may import its own layer or lower ones, never higher.
LAYERS: list[tuple[str, ...]] = [
    ("tracewire.keys", "tracewire.config", "tracewire.logs", "tracewire.metadata", "tracewire.encoding",
     "tracewire.redaction"),
    ("tracewire.model",),
    ("tracewire.context",),
    ("tracewire.recording",),
    ("tracewire.instrumentation", "tracewire.export"),
    ("tracewire.runtime",),
    ("tracewire", "tracewire.openai", "tracewire.read"),
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every module of ours that ``name`` imports, anywhere in the file."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:  # `import a.b.c` of a non-module name
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(module: str) -> int | None:
    best: tuple[int, int] | None = None  # (prefix length, layer): the most specific entry wins
    for index, layer in enumerate(LAYERS):
        for prefix in layer:
            matches = module == prefix or module.startswith(prefix + ".")
            if matches and (best is None or len(prefix) > best[0]):
                best = (len(prefix), index)
    return None if best is None else best[1]


def test_every_core_module_has_a_layer() -> None:
    missing = [m for m in MODULES if m.startswith("tracewire") and _layer(m) is None]
    assert not missing, f"add these modules to LAYERS: {missing}"


def test_core_imports_only_run_down() -> None:
    upward = []
    for module, targets in GRAPH.items():
        if not module.startswith("tracewire"):
            continue
        for target in targets:
            if target.startswith("tracewire"):
                src, dst = _layer(module), _layer(target)
                assert src is not None and dst is not None
                if dst > src:
                    upward.append(f"{module} (layer {src}) -> {target} (layer {dst})")
    assert not upward, "imports against the layers:\n" + "\n".join(sorted(upward))


def test_no_import_circles() -> None:
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(GRAPH):
        if node not in state:
            visit(node)
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize(
    ("source", "forbidden", "why"),
    [
        ("tracewire", "middleware", "the core never imports the middleware"),
        ("tracewire", "sinks", "the core reaches sinks only through the URI registry (by name)"),
        ("sinks", "middleware", "sinks know nothing about the web framework"),
        ("middleware", "sinks", "the middleware never imports a concrete sink"),
        ("middleware", "tracewire.read", "the request path never imports the read side"),
    ],
    ids=["core-middleware", "core-sinks", "sinks-middleware", "middleware-sinks", "request-read"],
)
def test_forbidden_arrows(source: str, forbidden: str, why: str) -> None:
    bad = sorted(
        f"{module} -> {target}"
        for module, targets in GRAPH.items()
        if module == source or module.startswith(source + ".")
        for target in targets
        if target == forbidden or target.startswith(forbidden + ".")
    )
    assert not bad, f"{why}:\n" + "\n".join(bad)


def test_request_path_never_imports_the_read_side() -> None:
    # Everything but the read side itself and the package's public façade (whose search_traces
    # imports the reader when called) is on the request path.
    request_path = [m for m in GRAPH if _layer(m) is not None and _layer(m) < _layer("tracewire.runtime") + 1]
    bad = sorted(f"{m} -> {t}" for m in request_path for t in GRAPH[m] if t.startswith("tracewire.read"))
    assert not bad, "\n".join(bad)


# What the middleware may use of the core: the public API, the instrumentation API, and the
# bottom layer's settings, keys and redaction policy.  Never recording or export internals.
MIDDLEWARE_MAY_IMPORT = {
    "tracewire", "tracewire.instrumentation", "tracewire.config", "tracewire.keys", "tracewire.redaction",
    "tracewire.encoding",
}


def test_middleware_uses_only_the_instrumentation_api() -> None:
    bad = sorted(
        f"{module} -> {target}"
        for module, targets in GRAPH.items()
        if module.startswith("middleware")
        for target in targets
        if target.startswith("tracewire") and target not in MIDDLEWARE_MAY_IMPORT
    )
    assert not bad, "middleware imports core internals:\n" + "\n".join(bad)
