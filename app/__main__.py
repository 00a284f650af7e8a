"""`python -m app` is the `cardstream` command."""

from app.cli import main

main()
