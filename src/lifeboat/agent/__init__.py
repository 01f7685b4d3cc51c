"""The unattended agent: schedules, one active agent per cluster, backups, prune, drills, metrics."""
