"""One runnable module per paper experiment: `python -m experiments.<name> --help`."""
