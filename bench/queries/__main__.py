"""`python -m bench.queries`."""

from bench.queries.cli import main

if __name__ == "__main__":
    main()
