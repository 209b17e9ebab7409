"""The package's shape: rooms by concern, imports one way, modules readable in one sitting.

docs/architecture.md draws the rooms; these tests hold the code to the drawing.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "ordertimeout"

#: The rooms, lowest first: a module may import its own room and the rooms before it.
ROOMS = ["errors", "rules", "observe", "inputs", "outputs", "notify", "state", "hosts", "cli"]


def module_name(path: pathlib.Path) -> str:
    parts = ["ordertimeout", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def imports_of(name: str) -> set[tuple[str, tuple[str, ...]]]:
    """(module, names) of every import of ``name`` inside the package, lazy ones too,
    leaving out imports made only for type checkers."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            if isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - child.level + 1]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                if target.startswith("ordertimeout"):
                    names = tuple(alias.name for alias in child.names)
                    # `from . import x` imports the module x when x is one
                    submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
                    found.update((module, ()) for module in submodules)
                    if len(submodules) < len(names):
                        found.add((target, names))
            elif isinstance(child, ast.Import):
                found.update((alias.name, ()) for alias in child.names if alias.name.startswith("ordertimeout"))
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def room_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else None


def test_at_most_eight_modules_sit_directly_in_the_package():
    top = [path.name for path in PACKAGE.glob("*.py")]
    assert len(top) <= 8, top


def test_every_module_is_in_a_known_room():
    for name in MODULES:
        room = room_of(name)
        assert room is None or room in ROOMS or room == "__main__", name


def test_no_module_passes_four_hundred_lines():
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > 400}
    assert not long


def test_lower_rooms_never_import_higher_ones():
    wrong = []
    for name in MODULES:
        room = room_of(name)
        if room not in ROOMS:
            continue
        for target, names in imports_of(name):
            target_room = room_of(target)
            if target_room is None:  # the package root: only its version
                if set(names) - {"__version__"}:
                    wrong.append((name, target, names))
            elif target_room in ROOMS and ROOMS.index(target_room) > ROOMS.index(room):
                wrong.append((name, target))
    assert not wrong


def test_no_import_cycles():
    graph = {name: {target for target, _ in imports_of(name) if target in MODULES and target != name}
             for name in MODULES}
    # a module importing from a package also runs that package's __init__: an edge too
    for name in MODULES:
        for target in list(graph[name]):
            parent = target.rsplit(".", 1)[0]
            while parent != "ordertimeout" and "." in parent:
                if parent in MODULES and not name.startswith(parent + ".") and name != parent:
                    graph[name].add(parent)
                parent = parent.rsplit(".", 1)[0]
    state: dict[str, int] = {}
    cycles = []

    def walk(node, trail):
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append(trail[trail.index(target):] + [target])
            elif target not in state:
                walk(target, trail + [target])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name, [name])
    assert not cycles


@pytest.mark.parametrize("room", [room for room in ROOMS if room != "errors"])
def test_each_room_says_what_flows_in_and_out(room):
    init = PACKAGE / room / "__init__.py"
    docstring = ast.get_docstring(ast.parse(init.read_text()))
    assert docstring and len(docstring.split()) >= 15, room


def test_the_public_imports_of_the_readme_still_work():
    from ordertimeout import EventParser, EventSchema, Matcher, Mode, Pipeline, TimeMode  # noqa: F401

    matcher = Matcher(within=1000, mode=Mode.EACH)
    assert matcher.on_event("u1", 1, 0, b"{}") == []
