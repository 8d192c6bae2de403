"""One module per `dynasearch` sub-command; see search/cli.py."""
