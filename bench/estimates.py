"""How close Tollgate's token estimates come to exact counts, on a small corpus of English,
Russian and code prompts (`estimate_corpus.py`).

Exact counts come from `bpe-openai`, a registry package whose wheel carries OpenAI's o200k and
cl100k vocabularies (nothing is downloaded at run time). It is not a dependency of Tollgate;
run the measurement with it added for the one command:

    uv run --with bpe-openai python bench/estimates.py

Prints, per language and vocabulary, the exact token total and each estimate as a ratio of it
(1.00 is exact; above errs high), and the mean absolute error per prompt.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from tollgate_core.tokens import calibrated_text_tokens, estimate_text_tokens

sys.path.insert(0, str(Path(__file__).parent))
from estimate_corpus import CORPUS

ESTIMATES: dict[str, Callable[[str], int]] = {
    "hold (bytes/3)": estimate_text_tokens,
    "calibrated": calibrated_text_tokens,
}


def main() -> None:
    try:
        import bpe_openai
    except ImportError:
        sys.exit("run with: uv run --with bpe-openai python bench/estimates.py")
    print(f"{'corpus':<10}{'vocabulary':<14}{'exact':>7}", end="")
    for name in ESTIMATES:
        print(f"{name + ' ratio':>24}{'mean abs err':>14}", end="")
    print()
    for vocabulary in ("o200k_base", "cl100k_base"):
        encoding = bpe_openai.get_encoding(vocabulary)
        for language, prompts in CORPUS.items():
            exact = [len(encoding.encode(prompt)) for prompt in prompts]
            print(f"{language:<10}{vocabulary:<14}{sum(exact):>7}", end="")
            for estimate in ESTIMATES.values():
                guesses = [estimate(prompt) for prompt in prompts]
                ratio = sum(guesses) / sum(exact)
                error = sum(abs(g - e) / e for g, e in zip(guesses, exact, strict=True))
                print(f"{ratio:>24.2f}{error / len(exact):>13.0%} ", end="")
            print()


if __name__ == "__main__":
    main()
