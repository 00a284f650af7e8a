"""The `cardstream` command (`python -m app`): commands, the card as text, the demo.

Dependency rule (CONTRIBUTING.md, checked by `tests/unit/test_layers.py`): the
layers are `domain` <- `pipeline` <- `worker` <- `tools` <- `cli`; a module may
import only from its own layer and the layers below it. `app.cli` is the top:
nothing imports it but `app.__main__`.
"""

from app.cli.commands import main

__all__ = ["main"]
