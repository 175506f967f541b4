"""One module per command line command: `add_parser(subparsers)` and `run(args) -> exit code`."""
