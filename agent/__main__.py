"""`python -m agent` runs the endpoint agent's command line."""

from agent.cli import main

main()
