"""Kafka moves with the rest: topics created on production like staging's, a mirror staging ->
production that commits a source offset only after production acknowledged its copy, consumer
groups moved at translated offsets, producers moved at the commit point after the mirror drained
what staging took before, and the same machinery backwards for the rollback.

Delivery is at-least-once: no acknowledged event is lost; an event can arrive twice (a mirror
restarted after a copy was acknowledged but before its source offset was committed, or a
consumer group resuming from the first copy it had not yet processed). Every copy carries its
origin (cluster label, partition, offset) in headers, which is the offset map the group
translation reads, so duplicates are counted, not guessed. Plain Python over confluent-kafka:
testable without Airflow.
"""
