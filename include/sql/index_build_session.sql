-- A deferred index build's session: memory to sort in, no statement timeout.
SET maintenance_work_mem = '256MB';
SET statement_timeout = 0
