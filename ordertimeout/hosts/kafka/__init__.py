# ordertimeout kafka: the same rules as `watch`, as a consumer group on a Kafka topic.
#
#   input topic ──▶ worker (consumer group member) ──records──▶ partition task, one per
#     (JSON values,   rebalance listener: pause,       assigned partition: its own Pipeline
#      keyed by the   restore, seek, resume; on        (matcher + watermark), timers, checkpoints
#      --key field)   revocation flush + save + commit        │
#                                                              ├──▶ results topic (key: result key,
#                                                              │      value: the --json object)
#                                                              └──▶ <group>-state (changelog)
#
# connect: client settings (TLS, SASL), retries, topics. changelog: the state of one
# partition as incremental records, and back. restore: reading it back, bounded, with
# progress. produce: results and changelog records as whole record batches. services:
# what a partition task asks of its worker. reports: one log line per group event, and
# what /healthz and the status line say. figures: the worker's counters. Only
# `ordertimeout kafka` imports this package's modules (they load aiokafka).
"""Scale-out on Kafka: a consumer group of matchers, state in a changelog topic."""
