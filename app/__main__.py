"""``python -m app worker``: run a Faust worker of the service."""

from .main import app


def main() -> None:
    """Hand the command line to Faust (``worker``, ``agents``, ``tables``, ...)."""
    app.main()


if __name__ == "__main__":
    main()
