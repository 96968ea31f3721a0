"""Tollgate provider package."""
