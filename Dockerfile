# The Tollgate server: the whole workspace installed from the lock file.
FROM python:3.12-slim
COPY --from=ghcr.io/astral-sh/uv:latest /uv /usr/local/bin/uv
WORKDIR /app
ENV UV_LINK_MODE=copy UV_COMPILE_BYTECODE=1 PATH="/app/.venv/bin:$PATH"
COPY . .
RUN uv sync --locked --no-dev --all-packages
EXPOSE 8000
CMD ["tollgate", "serve", "--host", "0.0.0.0", "--port", "8000"]
