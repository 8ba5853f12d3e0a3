"""scribe-console: the operator web console (queues, jobs, dead letters, rate limits), served
over HTTP behind a login. Server-rendered pages; replay and purge go through ops/dlq.py, the
library scribe-dlq uses, so both behave identically."""
