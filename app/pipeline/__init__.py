"""The data flow between the agents, without Kafka: topics, ops, steps, records.

What lives here: the topic registry and every derived topic name (`topics`),
the ops the agents send each other over the internal topics (`ops`), what
cardstream publishes (`changes`), the 512 KiB rule (`limits`), the intake's door
(`intake`), each agent's batch step (`steps`: state and a batch of ops in,
state and messages out) and an in-process driver that runs the steps with
batching and an outbox as the worker does (`driver`, the tests' oracle).

Dependency rule (CONTRIBUTING.md, checked by `tests/unit/test_layers.py`): the
layers are `domain` <- `pipeline` <- `worker` <- `tools` <- `cli`; a module may
import only from its own layer and the layers below it. `app.pipeline` imports
`app.domain` only, and no Faust, aiokafka or confluent-kafka: the worker is one
way to run it.
"""
