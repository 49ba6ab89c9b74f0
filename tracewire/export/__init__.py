"""Export: finishing a trace (build, sample, truncate, serialize), the pipeline, destinations."""
