"""Tasks the task tests enqueue (module-level, as Django requires)."""
