"""`python -m bench.processor`."""

from bench.processor.cli import main

if __name__ == "__main__":
    main()
