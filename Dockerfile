# The Tollgate server: the workspace installed from the lock file, run as an unprivileged user.
# The Python here is the one .python-version names, so uv never downloads a second one.
FROM python:3.11-slim

# uv pinned to the release the lock file was made with; bump both together.
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /usr/local/bin/uv

ENV UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    PATH="/app/.venv/bin:$PATH" \
    PYTHONUNBUFFERED=1

RUN groupadd --system --gid 10001 tollgate \
    && useradd --system --uid 10001 --gid tollgate --home-dir /data --no-create-home tollgate \
    && mkdir -p /data && chown tollgate:tollgate /data

WORKDIR /app

# Third-party dependencies first, from the lock and the members' pyproject files only: this
# layer is rebuilt when the dependencies change, not on every change of our code.
COPY pyproject.toml uv.lock ./
COPY packages/core/pyproject.toml packages/core/README.md packages/core/
COPY packages/providers-openai/pyproject.toml packages/providers-openai/README.md packages/providers-openai/
COPY packages/providers-gemini/pyproject.toml packages/providers-gemini/README.md packages/providers-gemini/
COPY packages/providers-anthropic/pyproject.toml packages/providers-anthropic/README.md packages/providers-anthropic/
COPY packages/server/pyproject.toml packages/server/README.md packages/server/
COPY packages/cli/pyproject.toml packages/cli/README.md packages/cli/
COPY examples/tollgate-echo/pyproject.toml examples/tollgate-echo/README.md examples/tollgate-echo/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --all-packages --no-install-workspace

# Then our own packages (see .dockerignore for what stays out of the build context).
COPY . .
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --all-packages

USER 10001:10001
ENV TOLLGATE_DATA_DIR=/data
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2)"]
CMD ["tollgate", "serve", "--host", "0.0.0.0", "--port", "8000"]
