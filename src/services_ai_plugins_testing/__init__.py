"""Testing helpers for services-ai-plugins."""
