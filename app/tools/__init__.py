"""Operator tools around the worker: everything the CLI runs that is not the worker.

What lives here: the embedded broker (`broker`), topic admin (`admin`), the
channel producer (`producer`), reading offsets and records (`offsets`), dead
letters (`deadletters`), state versions and rebuilds (`rebuild`), export
(`export`), worker processes for the demo, tests and benchmarks (`runner`), the
demo scenario (`scenario`), JSON Schema export (`schemas_export`) and progress
lines (`progress`).

Dependency rule (CONTRIBUTING.md, checked by `tests/unit/test_layers.py`): the
layers are `domain` <- `pipeline` <- `worker` <- `tools` <- `cli`; a module may
import only from its own layer and the layers below it. `app.tools` never
imports `app.cli`.
"""
