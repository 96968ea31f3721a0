"""Passwords, tokens and API key secrets."""
