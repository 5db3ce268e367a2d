"""Client and maintenance subcommands of the ``weall`` command line."""
