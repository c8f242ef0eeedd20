"""The package's layers (docs/ARCHITECTURE.md): nothing imports upward.

Every import statement of `he_keras`, including those inside functions, is
read from the source; a module may import its own room and lower layers only.
"""

import ast
import os
import re
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "he_keras")
# Bottom to top, as in docs/ARCHITECTURE.md. Rooms of layer 0 may import each
# other; above it, a room imports only itself and lower layers.
LAYERS = (
    ("he_keras", "he_keras.defaults", "he_keras.files", "he_keras.validation", "he_keras.backends",
     "he_keras.profiling", "he_keras.layers", "he_keras.losses"),
    ("he_keras.models", "he_keras.data"),
    ("he_keras.attacks",),
    ("he_keras.training", "he_keras.evaluation", "he_keras.export"),
    ("he_keras.runs",),
    ("he_keras.cli",),
)
LAYER_OF = {room: i for i, rooms in enumerate(LAYERS) for room in rooms}


def room(module: str) -> str:
    """`he_keras.<first part>`, or `he_keras` for the package itself."""
    parts = module.split(".")
    return ".".join(parts[:2])


def modules() -> dict:
    """Module name -> source path, for every module of the package."""
    found = {}
    for directory, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                found[re.sub(r"\.__init__$", "", module)] = path
    return found


def imports(path: str) -> list:
    """(line, imported module) for every absolute import in a file.

    `from he_keras import defaults` imports the room `he_keras.defaults`.
    """
    found = []
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "he_keras":
                found += [(node.lineno, f"he_keras.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def upward_imports() -> list:
    found = []
    for module, path in modules().items():
        own = room(module)
        for line, target in imports(path):
            if target.split(".")[0] in ("apps", "experiments", "bench", "tests"):
                found.append(f"{module}:{line} imports {target} (outside the package)")
                continue
            if not target.startswith("he_keras"):
                continue
            other = room(target)
            if other == own or other not in LAYER_OF:
                continue
            if LAYER_OF[other] > LAYER_OF[own] or (LAYER_OF[other] == LAYER_OF[own] != 0):
                found.append(f"{module}:{line} imports {target} ({other}: layer {LAYER_OF[other]}, "
                             f"{own}: layer {LAYER_OF[own]})")
    return found


def test_every_room_of_the_package_has_a_layer():
    rooms = {room(m) for m in modules()}
    assert rooms == set(LAYER_OF), rooms ^ set(LAYER_OF)


def test_nothing_imports_upward_or_sideways():
    assert upward_imports() == []


@pytest.mark.parametrize("source,expected", [
    ("from he_keras.runs import run\n", "he_keras.runs: layer 4, he_keras.training: layer 3"),
    ("def f():\n    from he_keras.evaluation import evaluate\n", "he_keras.evaluation: layer 3"),
    ("import experiments.study\n", "outside the package"),
])
def test_the_check_sees_an_upward_import_also_inside_a_function(source, expected, tmp_path, monkeypatch):
    path = os.path.join(PACKAGE, "training", "base.py")
    patched = tmp_path / "base.py"
    patched.write_text(open(path).read() + "\n" + source)
    real = modules()
    monkeypatch.setattr(sys.modules[__name__], "modules", lambda: {**real, "he_keras.training.base": str(patched)})
    found = upward_imports()
    assert len(found) == 1 and expected in found[0], found
