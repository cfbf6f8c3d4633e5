"""``python -m services_ai_plugins``: the same as the ``services-ai-plugins`` command."""

from ._cli._main import run

if __name__ == "__main__":
    run()
