"""The ``tessera`` command and its subcommands."""
