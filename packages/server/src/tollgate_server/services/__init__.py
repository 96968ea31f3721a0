"""Business logic shared by the API and the CLI. Never imports FastAPI."""
