"""Observability every role uses: per-stage stats and path spans, logging set-up."""
