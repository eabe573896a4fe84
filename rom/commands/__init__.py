"""The `rom` subcommands, one module per subcommand, named after it (``rom train-tokenizer`` ->
``train_tokenizer.py``); the table of them is ``rom.cli.COMMANDS``.

Each module is thin: ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> exit code``, which
parses nothing itself and calls library functions. A module imports torch (and the library) only inside
``run``, so `rom --help` stays fast. Errors the toolkit raises (``rom.errors.RomError``) reach ``rom.cli``,
which prints them as one line.
"""
