"""The pure core: the product's rules as plain functions over plain, immutable data.

What lives here: the event models (`events`), links and their normalising
(`links`), who owns a link when and the guard (`identity`), a profile's facts
(`facts`) and head (`profile`), the card (`card`, `rfm`, `contacts`) and the
people core (`people`). No Faust, no Kafka, no clock, no I/O: a test needs
nothing but Python to run them.

Dependency rule (CONTRIBUTING.md, checked by `tests/unit/test_layers.py`): the
layers are `domain` <- `pipeline` <- `worker` <- `tools` <- `cli`; a module may
import only from its own layer and the layers below it. `app.domain` is the
bottom: it imports nothing of the others, and no Faust, aiokafka or
confluent-kafka.
"""
