"""Faust agents: thin loops that look up state, call the domain, write state, send results."""
