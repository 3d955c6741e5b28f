"""The jobs a user runs: enhance one file, a batch of files, describe a file."""
