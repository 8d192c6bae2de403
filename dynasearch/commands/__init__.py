"""One module per `dynasearch` sub-command; see dynasearch/cli.py."""
