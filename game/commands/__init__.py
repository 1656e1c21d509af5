"""Sub-commands of ``latent-reach``, one module each.

A module here defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``;
``game.cli`` finds them by itself, so adding a command touches no shared file.
"""
