-- muster's cluster schema, version 4: tasks that wait. A `scheduled` task
-- (a `run_at` or `delay_ms` submission, or a failed one waiting out its
-- backoff) keeps when it is due in its task's progress; the leader queues
-- the due ones in one statement, which this index keeps from reading any
-- other row. `dead` tasks are kept longer than other finished ones
-- (`dead_retention`); the leader's prune tells them apart by state.

CREATE INDEX muster_tasks_scheduled
    ON muster_tasks (((task->'progress'->>'run_at')::bigint))
    WHERE state = 'scheduled';
