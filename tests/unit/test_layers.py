"""The dependency rule of `app/`: layers import downwards only (CONTRIBUTING.md).

`domain` <- `pipeline` <- `worker` <- `tools` <- `cli`: a module may import from
its own layer and the layers below it, never from one above. `domain` and
`pipeline` import no Kafka client and no Faust: they run in a plain test. Every
import counts, at the top of a module or inside a function, under
`TYPE_CHECKING` or not. The imports are read with `ast`, nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[2] / "app"

#: Lowest first; a module of layer N may import layers 0..N.
LAYERS = ("domain", "pipeline", "worker", "tools", "cli")

#: Third-party packages the pure layers may not import.
KAFKA_AND_FAUST = ("faust", "mode", "aiokafka", "confluent_kafka", "rocksdict")


def layer_of(module: str) -> int | None:
    """The layer index of `app.<layer>...`; None for `app` itself and `app.__main__`."""
    parts = module.split(".")
    if parts[0] != "app" or len(parts) < 2 or parts[1] not in LAYERS:
        return None
    return LAYERS.index(parts[1])


def module_name(path: Path) -> str:
    relative = path.relative_to(APP.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in the file at `path`."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            # `from app import cli` imports the package `app.cli`
            found.extend((node.lineno, f"{node.module}.{a.name}") for a in node.names)
    return found


MODULES = sorted(APP.rglob("*.py"))


def test_every_module_of_app_is_in_a_layer() -> None:
    loose = [
        module_name(p)
        for p in MODULES
        if layer_of(module_name(p)) is None and p.name not in ("__init__.py", "__main__.py")
    ]
    assert loose == [], f"modules outside domain/pipeline/worker/tools/cli: {loose}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_point_down_only(path: Path) -> None:
    module = module_name(path)
    own = layer_of(module)
    if own is None:  # app/__init__.py, app/__main__.py: the top
        return
    upward = []
    for line, imported in imports_of(path):
        target = layer_of(imported)
        if target is not None and target > own:
            upward.append(f"{path.relative_to(APP.parent)}:{line} imports {imported}")
        top = imported.split(".")[0]
        if own <= LAYERS.index("pipeline") and top in KAFKA_AND_FAUST:
            upward.append(f"{path.relative_to(APP.parent)}:{line} imports {imported}")
    assert upward == [], f"{LAYERS[own]} may import only {LAYERS[: own + 1]}: {upward}"


def test_the_rule_is_checked_on_a_bad_import(tmp_path: Path) -> None:
    """The checker itself sees an upward import and a Kafka import in a pure layer."""
    bad = tmp_path / "bad.py"
    bad.write_text("import faust\ndef f():\n    from app.worker.main import create_app\n")
    assert imports_of(bad) == [
        (1, "faust"),
        (3, "app.worker.main"),
        (3, "app.worker.main.create_app"),
    ]
    assert layer_of("app.worker.main") == 2 and layer_of("app.domain.links") == 0
    assert layer_of("app.cli") == 4 and layer_of("app") is None
