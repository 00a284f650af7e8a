"""The worker's web server: health, stats and (later) the lookup API and card page."""
