"""What the API and the workers share: settings, the database layer, the audit chain, problem documents,
the lifecycle of requests, jobs and versions, and the job loop. No FastAPI and no Celery in here."""
