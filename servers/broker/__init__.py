"""The broker: topics and partitions on a segmented write-ahead log, consumer groups, retries and dead letters."""
