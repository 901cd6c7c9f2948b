"""The notifier's backends: etcd for silences, claims on notifications and the notification log."""
