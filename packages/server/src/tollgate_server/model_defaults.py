"""What a new model gets when its limits are not given: the same through the API,
`tollgate models add` and `tollgate models import`. A module of its own so the CLI can name
them in its options without importing the schemas."""

DEFAULT_CONTEXT_WINDOW = 128_000
DEFAULT_MAX_OUTPUT_TOKENS = 4_096
