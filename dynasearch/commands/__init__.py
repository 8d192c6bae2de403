"""One module per `dynasearch` sub-command; see dynasearch/cli.py.

Each module imports the library inside its `run()` (and `register()` only what builds its parser):
`dynasearch --help` builds every sub-command's parser and must not import torch, optuna, pandas or
matplotlib, which take seconds."""
