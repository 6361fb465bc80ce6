"""Background jobs: redaction, purges, training and exports, run off the ask path.

With Postgres the jobs go to a procrastinate queue and ``lookloop worker`` processes run them; with SQLite (one
process) the same job functions run in a thread of that process. Either way every job has a row in ``jobs``
(state, progress, attempts, error) that operators read with ``lookloop jobs list`` or ``GET /v1/jobs``.
"""

from lookloop.jobs.queue import (
    InProcessJobs,
    JobContext,
    JobFn,
    JobInfo,
    JobQueue,
    JobState,
    PostgresJobs,
    job_queue,
)

__all__ = ["InProcessJobs", "JobContext", "JobFn", "JobInfo", "JobQueue", "JobState", "PostgresJobs", "job_queue"]
