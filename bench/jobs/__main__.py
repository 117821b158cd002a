"""`python -m bench.jobs`."""

from bench.jobs.cli import main

if __name__ == "__main__":
    main()
