"""Telemetry: metrics ingestion, a time-series store with downsampling tiers, PromQL and the Prometheus HTTP API."""
