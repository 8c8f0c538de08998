"""``python -m dsbox``: the same command line as the ``dsbox`` console script."""

from dsbox.cli import main

if __name__ == "__main__":
    main()
