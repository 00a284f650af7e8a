"""Faust agents: thin loops that load state, call the pipeline's steps, store it, send results."""
