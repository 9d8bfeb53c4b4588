"""`python -m gentrain` is the same as the `gentrain` command."""

from gentrain.train import main

if __name__ == "__main__":
    main()
