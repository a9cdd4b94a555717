"""Ray job entry points (`python -m jobs.curate --config ...`)."""
