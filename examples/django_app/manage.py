#!/usr/bin/env python
"""The example CRM's manage.py: ``python manage.py demo`` sets it up, ``runserver`` serves it."""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crm.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
