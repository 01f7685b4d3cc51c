"""The parser of each command, apart from its work: ``lifeboat --help`` imports no command's implementation.

Each module's ``register`` adds its commands to the ``lifeboat`` parser; each command's function
carries its help (see :func:`lifeboat.cli.flags.add_command`) and imports the module that does
the work (grpc, pydantic, the stores, the restore steps...) only when the command runs.
"""
