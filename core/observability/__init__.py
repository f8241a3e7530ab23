"""What an operator sees of the service: structured logs (`logs`), Prometheus metrics (`metrics`, the
database/broker figures of `collector`) and optional OpenTelemetry tracing (`tracing`)."""
