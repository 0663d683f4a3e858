"""Live jobs: events in Redis (a stream per job, one channel every web process listens to),
previews, and waiting for a job's end without holding a thread."""
