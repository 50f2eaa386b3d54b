"""SUPERB-style downstream evaluation: tasks, heads, weighted-sum probe, metrics and dataset readers."""
