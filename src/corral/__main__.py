"""`python -m corral` is the `corral` command."""

from .cli import main

main()
