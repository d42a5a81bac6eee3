"""`python -m kopretrain <command> [overrides]` is the same as the `kopretrain` script."""

from kopretrain.cli import main

if __name__ == "__main__":
    main()
