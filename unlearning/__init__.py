"""Pure unlearning library: data with stable sample IDs, training, methods, audits. No DB, no HTTP."""
