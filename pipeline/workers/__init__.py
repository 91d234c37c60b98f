"""A worker process: what runs it (its spec, decoded once), and starting workers as processes on
this machine (the fork server and plain child processes)."""
