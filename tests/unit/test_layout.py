"""The layout holds: no import cycle in egtlm_core, no framework import in it, adapters and benchmarks on
public names."""

from __future__ import annotations

import ast
import functools
import importlib
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "egtlm_core"
ADAPTERS = ROOT / "integrations"
# What adapters may import from the core: the user API and the adapter plumbing package.
ADAPTER_API = ("egtlm_core", "egtlm_core.adapter_kit")
FRAMEWORKS = ("langchain", "langchain_core", "llama_index", "sentence_transformers", "chromadb")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(path: Path) -> list[tuple[str, list[str]]]:
    """(absolute module, imported names) of every import outside `if TYPE_CHECKING:` blocks."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            found.append((module, [alias.name for alias in node.names]))
    return found


def _core_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in CORE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for module, names in _runtime_imports(path):
            # "from . import x" names a submodule; "from .a import b" depends on module a
            targets = [f"{module}.{n}" for n in names if f"{module}.{n}" in modules] or [module]
            edges.update(t for t in targets if t in modules and t != name)
        graph[name] = edges
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_finder_sees_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_core_imports_have_no_cycle():
    graph = _core_graph()
    # Package __init__ files re-export their modules; what matters is that modules never import up.
    modules_only = {
        k: {v for v in vs if not (CORE.parent / v.replace(".", "/") / "__init__.py").exists()}
        for k, vs in graph.items()
        if not (CORE.parent / k.replace(".", "/") / "__init__.py").exists()
    }
    assert _find_cycle(modules_only) is None, _find_cycle(modules_only)
    assert "egtlm_core.model" not in graph["egtlm_core.rag.engine"]


# The one exception: distillation teachers are sentence-transformers models, loaded at training time
# only (egtlm[distill]); nothing that embeds or generates imports it.
TEACHER_RUNTIME = {("egtlm_core/training/teachers.py", "sentence_transformers")}


def test_core_imports_no_rag_framework():
    for path in CORE.rglob("*.py"):
        where = str(path.relative_to(ROOT))
        for module, _ in _runtime_imports(path):
            top = module.split(".")[0]
            assert top not in FRAMEWORKS or (where, top) in TEACHER_RUNTIME, f"{where} imports {module}"


@pytest.mark.parametrize("path", sorted(ADAPTERS.rglob("*.py")), ids=lambda p: str(p.relative_to(ADAPTERS)))
def test_adapters_use_public_core_names_only(path: Path):
    """Adapters import `egtlm_core` or a subpackage's public names, never a module's internals."""
    for module, names in _runtime_imports(path):
        if module.split(".")[0] != "egtlm_core":
            continue
        assert module in ADAPTER_API, f"{path.name} imports from {module}; use {' or '.join(ADAPTER_API)}"
        package = importlib.import_module(module)
        assert hasattr(package, "__path__"), f"{path.name} imports the module {module}; import its package"
        public = set(getattr(package, "__all__", ()))
        assert set(names) <= public, f"{path.name} imports {sorted(set(names) - public)} from {module}"


# --- adapters and the server reach the shared cache through `DocumentCache` only -----------------
SERVER = CORE / "server"
ENGINE_NAMES = {  # the internal engine (rag/engine.py) and what only it has
    "SharedCacheRAG",
    "rag",
    "_rag",
    "_engine",
    "reuser",
    "remember",
    "store_states",
    "cache_keys",
    "forget_states",
    "known_documents",
    "prefix_segment",
    "default_prefix",
    "delete_documents",
}
INTERNAL_MODULES = ("egtlm_core.rag.engine", "egtlm_core.rag.capture", "egtlm_core.rag.matching")


def _document_cache_violations(path: Path) -> list[str]:
    from egtlm_core import DocumentCache

    public = {name for name in dir(DocumentCache) if not name.startswith("_")}
    found = [f"imports {m}" for m, _ in _runtime_imports(path) if m.startswith(INTERNAL_MODULES)]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        name = (
            node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else None
        )
        if name in ENGINE_NAMES:
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
            inner = node.value.attr
            if (inner == "document_cache" and node.attr not in public) or (inner, node.attr) == (
                "store",
                "contains",
            ):
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_the_document_cache_rule_sees_reach_throughs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)  # module names relative to the temp dir
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from egtlm_core.rag.engine import SharedCacheRAG\n"
        "lm.rag.remember(texts)\n"
        "lm.document_cache._engine.store.contains(k)\n"
        "lm.document_cache.search(q, 2)\n"
    )
    found = _document_cache_violations(bad)
    assert found[0] == "imports egtlm_core.rag.engine"
    assert any("lm.rag.remember" in f for f in found) and any("_engine" in f for f in found)
    assert any("store.contains" in f for f in found) and not any("search" in f for f in found)


@pytest.mark.parametrize(
    "path",
    sorted([*ADAPTERS.rglob("*.py"), *SERVER.rglob("*.py")]),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_adapters_and_server_use_only_the_document_cache(path: Path):
    """Integrations and the server call `EgtLM.document_cache`'s public methods, never the engine."""
    assert _document_cache_violations(path) == [], path.relative_to(ROOT)


def test_the_user_api_and_the_adapter_kit_are_pinned():
    """`egtlm_core.__all__` is what users import; adapter plumbing lives in `egtlm_core.adapter_kit`."""
    import egtlm_core
    import egtlm_core.adapter_kit as kit

    assert egtlm_core.__all__ == [
        "AnswerResult", "CacheTier", "ChatResult", "ChatStream", "DEFAULT_MODEL_NAME", "DiskTier",
        "DocumentCache", "DocumentIndex", "EgtLM", "EgtLMConfig", "GenerationOptions", "IndexedDocument",
        "MemoryTier", "RECOMPUTE_TOKENS", "RedisTier", "ScoredDocument", "SharedDocumentIndex", "TieredStore",
        "ToolCall", "default_model_dir", "document_text", "format_instruction",
    ]  # fmt: skip
    for module in (egtlm_core, kit):
        assert all(hasattr(module, name) for name in module.__all__)
    assert not set(egtlm_core.__all__) & set(kit.__all__)


# --- benchmarks use public names only, so a core change that breaks one fails here ---------------
BENCHMARKS = ROOT / "benchmarks"
# What a benchmark may import from the core: the user API, the adapter plumbing, and the subpackages
# whose `__init__` declares a public API; from each, only the names in its `__all__`.
PUBLIC_CORE = (
    "egtlm_core",
    "egtlm_core.adapter_kit",
    "egtlm_core.cache",
    "egtlm_core.evaluation",
    "egtlm_core.rerank",
    "egtlm_core.scale",
    "egtlm_core.server",
    "egtlm_core.training",
)
INTEGRATIONS = ("langchain_egtlm", "sentence_transformers_egtlm", "chromadb_egtlm")  # + llama_index.*.egtlm


@functools.cache
def _public(package: str) -> frozenset[str]:
    return frozenset(getattr(importlib.import_module(package), "__all__", ()))


def _integration_package(module: str) -> str | None:
    """The integration package `module` is in (`langchain_egtlm`, `llama_index.llms.egtlm`, ...)."""
    parts = module.split(".")
    if parts[0] in INTEGRATIONS:
        return parts[0]
    if parts[0] == "llama_index" and "egtlm" in parts:
        return ".".join(parts[: parts.index("egtlm") + 1])
    return None


def _instead(name: str) -> str:
    """Where a name is public, as an import line to use, or what to do when it is nowhere."""
    homes = [package for package in PUBLIC_CORE if name in _public(package)]
    if homes:
        return "use " + " or ".join(f"`from {home} import {name}`" for home in homes)
    return (
        f"`{name}` is in no public `__all__` ({', '.join(PUBLIC_CORE)}): add it to one if it is "
        "genuinely public, else keep a helper in benchmarks/_common.py"
    )


def _import_problems(module: str, names: list[str], line: int) -> list[str]:
    if module.split(".")[0] == "egtlm_core":
        if module not in PUBLIC_CORE:
            advice = "; ".join(_instead(n) for n in names) or f"import one of {', '.join(PUBLIC_CORE)}"
            return [f"line {line}: imports {module}, a private module: {advice}"]
        public = _public(module)
        return [
            f"line {line}: `{n}` is not in {module}.__all__: {_instead(n)}" for n in names if n not in public
        ]
    package = _integration_package(module)
    if package is None:
        return []
    names_hint = f"its public names are {sorted(_public(package))}"
    if module != package:
        return [
            f"line {line}: imports {module}, a module inside {package}; import from {package} ({names_hint})"
        ]
    return [
        f"line {line}: `{n}` is not in {package}.__all__ ({names_hint}; for a translation the adapter "
        "does, call its public class)"
        for n in names
        if n not in _public(package)
    ]


def _public_api_violations(path: Path) -> list[str]:
    """Non-public egtlm imports and `x._name` reach-ins (x not self/cls) in one benchmark file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found += _import_problems(alias.name, [], node.lineno)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found += _import_problems(node.module, [a.name for a in node.names], node.lineno)
        elif (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not (node.attr.startswith("__") and node.attr.endswith("__"))
            and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
        ):
            found.append(
                f"line {node.lineno}: `{ast.unparse(node)}` reaches into a private attribute; use a "
                "public property or method (add a small, documented one to the core if none exists)"
            )
    return [f"{path.name} {problem}" for problem in found]


def test_the_benchmark_rule_sees_private_names(tmp_path: Path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from egtlm_core import EgtLM, shared_lm\n"
        "from egtlm_core.loading.default_model import default_model_dir\n"
        "from egtlm_core.evaluation import read_xquad\n"
        "import langchain_egtlm.chat_models as chat_models\n"
        "from langchain_egtlm._messages import to_chat_messages\n"
        "from llama_index.llms.egtlm import EgtLMLLM, _helper\n"
        "from llama_index.core import Document\n"
        "m = EgtLM()\n"
        "m._loaded.body, self._own, m.__class__\n"
    )
    found = _public_api_violations(bad)
    assert found[0].startswith("bad.py line 1: `shared_lm` is not in egtlm_core.__all__")
    assert "`from egtlm_core.adapter_kit import shared_lm`" in found[0]
    assert "line 2: imports egtlm_core.loading.default_model" in found[1]
    assert "`from egtlm_core import default_model_dir`" in found[1]
    assert "line 4: imports langchain_egtlm.chat_models, a module inside langchain_egtlm" in found[2]
    assert "line 5: imports langchain_egtlm._messages" in found[3]
    assert "line 6: `_helper` is not in llama_index.llms.egtlm.__all__" in found[4]
    assert "line 9: `m._loaded` reaches into a private attribute" in found[5]
    assert len(found) == 6  # public names, framework imports, self._own and dunders pass


@pytest.mark.parametrize("path", sorted(BENCHMARKS.glob("*.py")), ids=lambda p: p.name)
def test_benchmarks_use_public_names_only(path: Path):
    """A benchmark imports public names only (`egtlm_core.__all__`, `adapter_kit`, the public
    subpackages' `__all__`, the integration packages' top-level names) and touches no other
    object's underscore attributes, so a core change cannot break it without a public name changing."""
    problems = _public_api_violations(path)
    assert not problems, "\n".join(problems)
