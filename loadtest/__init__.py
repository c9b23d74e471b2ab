"""Load tests (locust) and the auditor that checks a run against the truth in Redis."""
