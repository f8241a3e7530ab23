"""The benchmark behind `unlearn bench` (DESIGN section 11): presets, scenarios, method rows, a runner
that trains or loads the original model, runs and audits every method, and the JSON/table report."""
