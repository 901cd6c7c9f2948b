"""The broker's backends: etcd for topics, committed offsets and the retry scheduler's cursors."""
