from tokenkeys.cli.main import entry

entry()
