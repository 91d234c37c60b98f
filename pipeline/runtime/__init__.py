"""Process plumbing: services, tasks, child processes, logs and progress lines."""
