"""The pure core: plain functions over plain, immutable data. No Faust, Kafka, clock or I/O."""
