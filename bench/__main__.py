"""Run every benchmark: `python -m bench` (or `make bench`)."""

from bench import inference

if __name__ == "__main__":
    inference.main()
