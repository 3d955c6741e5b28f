"""``python -m seedark`` runs the command-line tool."""

from seedark.cli import main

if __name__ == "__main__":
    main()
