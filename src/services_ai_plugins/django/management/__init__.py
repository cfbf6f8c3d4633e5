"""The app's management command: ``manage.py plugins`` (in :mod:`.commands.plugins`)."""
