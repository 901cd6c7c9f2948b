"""The telemetry service's adapters onto libraries and engines."""
