"""The Faust worker: what `cardstream worker` (`python -m app worker`) runs.

What lives here: `create_app(settings)` (`main`), the worker's settings
(`settings`), its topics and typed tables (`channels`), the agents (`agents/`:
thin loops around `app.pipeline.steps`), the web server (`web/`), live card
changes for open staff pages (`live`), metrics and logs, and every change made
to Faust's own code (`faust_patches`).

Dependency rule (CONTRIBUTING.md, checked by `tests/unit/test_layers.py`): the
layers are `domain` <- `pipeline` <- `worker` <- `tools` <- `cli`; a module may
import only from its own layer and the layers below it. `app.worker` imports
`app.domain` and `app.pipeline`, never `app.tools` or `app.cli`.
"""
