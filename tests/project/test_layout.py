"""The layout's rules, read from the source: the package's modules import each other without a circle, a
command script or a benchmark imports the package and never another script, and project.yml makes every
command depend on its own script and on the package folder (so that no module list is kept by hand)."""

import ast
import re
from pathlib import Path
from typing import Dict, List, Optional, Set

import pytest
import srsly
from support.paths import ROOT

PACKAGE = ROOT / "src" / "iob_ner"
SCRIPTS = sorted((ROOT / "scripts").glob("*.py"))
BENCHMARKS = sorted((ROOT / "benchmarks").glob("*/*.py"))
TESTS = ROOT / "tests"
TEST_MODULES = sorted(TESTS.rglob("test_*.py"))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path, package: Optional[str] = None) -> Set[str]:
    """Every module a file imports, at the top or inside a function; relative imports resolved in `package`."""
    names: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if package else []
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            names.add(stem)
            names.update(f"{stem}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return names


def package_graph() -> Dict[str, Set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        graph[name] = {m for m in imported_names(path, package) if m in modules and m != name}
    return graph


def find_cycle(graph: Dict[str, Set[str]]) -> List[str]:
    """One import circle of the graph (its modules in order, the first repeated at the end), or []."""
    state: Dict[str, int] = {}  # 1: on the current path, 2: done
    path: List[str] = []

    def visit(node: str) -> List[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = 2
        path.pop()
        return []

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def test_the_cycle_finder_finds_a_circle_and_no_false_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_the_package_has_no_import_circle():
    graph = package_graph()
    assert len(graph) > 20 and graph["iob_ner.inference.local"]  # the graph was read, not empty
    assert find_cycle(graph) == []


def test_the_two_engines_do_not_import_each_other_or_their_caller():
    graph = package_graph()
    ray_engine = {name for name in graph if name.startswith("iob_ner.inference.ray_engine")}
    assert {"iob_ner.inference.ray_engine.driver", "iob_ner.inference.ray_engine.actor"} <= ray_engine
    for engine in ray_engine:
        assert not graph[engine] & {"iob_ner.inference", "iob_ner.inference.local"}, engine
    assert not graph["iob_ner.inference.local"] & ({"iob_ner.inference"} | ray_engine)


@pytest.mark.parametrize("path", SCRIPTS + BENCHMARKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_script_imports_the_package_and_no_other_script(path):
    local = {p.stem for p in SCRIPTS + BENCHMARKS} | {"predict_ray", "experiment", "prepare_corpus", "benchmark"}
    imported = {name.split(".")[0] for name in imported_names(path)}
    assert not imported & local, f"{path.name} imports the script(s) {sorted(imported & local)}"


def test_every_command_depends_on_the_inputs_its_script_names():
    """A command reruns when an input it reads changes: each corpus/, configs/ or assets/ path and the IOB
    export (${vars.train}) its script names is a dependency (or its own output). ${vars.dev} and ${vars.test}
    are left out: their default "auto" names no file, and weasel refuses a dependency that does not exist."""
    for command in srsly.read_yaml(ROOT / "project.yml")["commands"]:
        script = " ".join(command["script"])
        named = set(re.findall(r"(?<![\w/.-])((?:corpus|configs|assets)/[\w./-]+)", script))
        named |= set(re.findall(r"\$\{vars\.train\}", script))
        listed = set(command.get("deps", [])) | set(command.get("outputs", []))
        assert named <= listed, (command["name"], sorted(named - listed))


def test_every_command_depends_on_its_script_and_the_package():
    for project in (ROOT / "project.yml", ROOT / "benchmarks" / "project.yml"):
        for command in srsly.read_yaml(project)["commands"]:
            script = command["script"][0].split()[1]
            assert script in command["deps"], (project.name, command["name"])
            package = "src/iob_ner" if project.parent == ROOT else "../src/iob_ner"
            imports_package = any(n.startswith("iob_ner") for n in imported_names(project.parent / script))
            assert (package in command["deps"]) == imports_package, (project.name, command["name"])


def test_the_tests_mirror_the_package_folders():
    """A test file sits in the tests/ folder of the layer it tests (tests/pipeline/layers/ for
    src/iob_ner/pipeline/layers/), or in tests/project/ for the project end to end."""
    folders = {path: path.parent.relative_to(TESTS) for path in TEST_MODULES}
    misplaced = [
        str(path.relative_to(TESTS))
        for path, folder in folders.items()
        if not folder.parts or (folder.parts[0] != "project" and not (PACKAGE / folder / "__init__.py").is_file())
    ]
    assert TEST_MODULES and not misplaced, f"not in a folder that mirrors src/iob_ner: {misplaced}"
    # pytest imports each test file by its name alone (no __init__.py in tests/): one name, one file
    assert len({path.name for path in TEST_MODULES}) == len(TEST_MODULES)


def test_no_test_module_imports_another_or_conftest():
    """What several test files share is in tests/support/ (imported as `support`) or a conftest fixture."""
    for path in TEST_MODULES + sorted((TESTS / "support").glob("*.py")) + [TESTS / "conftest.py"]:
        imported = {name.split(".")[0] for name in imported_names(path)}
        wrong = sorted(name for name in imported if name.startswith("test_") or name in ("conftest", "browser"))
        assert not wrong, f"{path.relative_to(TESTS)} imports {wrong}: move what it needs into tests/support/"
