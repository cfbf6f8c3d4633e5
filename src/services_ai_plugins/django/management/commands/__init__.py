"""``manage.py plugins``: the services-ai-plugins command line on the project's registry."""
