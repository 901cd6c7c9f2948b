"""The notifier: Alertmanager's model (routing, grouping, inhibition, silences,
deduplication) sending to email, phone and webhook receivers."""
