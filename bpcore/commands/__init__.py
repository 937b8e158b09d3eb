"""Subcommands of the ``bpcore`` command line (see :mod:`bpcore.cli`)."""
