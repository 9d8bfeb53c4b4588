"""`python -m gentrain` is the same as the `gentrain` command."""

from gentrain.cli.train import main

if __name__ == "__main__":
    main()
