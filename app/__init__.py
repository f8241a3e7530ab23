"""FastAPI edge of the unlearning service: routes, schemas, auth, errors. Never imports torch."""
