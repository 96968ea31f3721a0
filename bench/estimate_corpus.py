# ruff: noqa: RUF001  (Cyrillic letters are the point of the Russian prompts)
"""A small corpus of chat prompts for measuring token estimates: English, Russian and code.

Kept in the repository (no download), written for this purpose; each entry is one user message.
"""

from __future__ import annotations

ENGLISH = [
    "What is the capital of France?",
    "Summarise the following paragraph in two sentences for a busy executive.",
    "Write a short poem about the sea at night, with a hopeful ending.",
    "Explain the difference between a process and a thread, with an example of when to use each.",
    "I have a meeting tomorrow at 9:30 with the finance team. Draft a polite email asking to "
    "move it to Thursday afternoon because of a scheduling conflict.",
    "List five ways to reduce the energy consumption of a small office building, and estimate "
    "the savings of each as a percentage.",
    "Translate into plain English: the party of the first part shall indemnify the party of the "
    "second part against all claims arising hereunder.",
    "How many minutes are there in 3.5 days? Show your working.",
    "You are a helpful assistant. Answer briefly and never invent facts. If you do not know, "
    "say so.",
    "Compare PostgreSQL and MySQL for a write-heavy workload with many concurrent transactions, "
    "focusing on locking, replication and operational complexity.",
    "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs.",
    "Give me a recipe for a vegetarian lasagne that serves six, with a shopping list grouped by "
    "supermarket aisle.",
]

RUSSIAN = [
    "Какая столица Франции?",
    "Кратко перескажи следующий абзац в двух предложениях для занятого руководителя.",
    "Напиши короткое стихотворение о море ночью с обнадёживающим финалом.",
    "Объясни разницу между процессом и потоком и приведи пример, когда использовать каждый.",
    "Завтра в 9:30 у меня встреча с финансовым отделом. Составь вежливое письмо с просьбой "
    "перенести её на четверг после обеда из-за накладки в расписании.",
    "Перечисли пять способов снизить потребление энергии в небольшом офисном здании и оцени "
    "экономию каждого в процентах.",
    "Сколько минут в 3,5 сутках? Покажи ход решения.",
    "Ты полезный ассистент. Отвечай кратко и никогда не выдумывай факты. Если не знаешь, так и "
    "скажи.",
    "Сравни PostgreSQL и MySQL для нагрузки с большим количеством записей и конкурентных "
    "транзакций: блокировки, репликация, сложность эксплуатации.",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "Дай рецепт вегетарианской лазаньи на шесть человек со списком покупок по отделам магазина.",
    "Почему небо голубое? Объясни так, чтобы понял школьник.",
]

CODE = [
    "def add(a: int, b: int) -> int:\n    return a + b\n",
    "for (let i = 0; i < items.length; i++) {\n  console.log(items[i].name);\n}\n",
    "SELECT id, email FROM accounts WHERE balance > 0 ORDER BY created_at DESC LIMIT 10;",
    "Fix the bug in this function:\n\n```python\ndef mean(xs):\n    return sum(xs) / len(xs)\n"
    "```\nIt fails on an empty list.",
    "import asyncio\n\nasync def main() -> None:\n    await asyncio.sleep(1)\n    print('done')"
    "\n\nasyncio.run(main())\n",
    '#include <stdio.h>\n\nint main(void) {\n    printf("Hello, world!\\n");\n    return 0;\n}\n',
    '{\n  "name": "tollgate",\n  "version": "0.1.0",\n  "dependencies": {\n'
    '    "fastapi": ">=0.110"\n  }\n}\n',
    "fn fib(n: u64) -> u64 {\n    match n {\n        0 | 1 => n,\n"
    "        _ => fib(n - 1) + fib(n - 2),\n    }\n}\n",
    "Explain what this regex matches: ^(?:[a-z0-9!#$%&'*+/=?^_`{|}~-]+)@[a-z0-9.-]+\\.[a-z]{2,}$",
    "class Stack:\n    def __init__(self):\n        self._items = []\n\n    def push(self, item):\n"
    "        self._items.append(item)\n\n    def pop(self):\n        return self._items.pop()\n",
    "git rebase -i HEAD~3 && git push --force-with-lease origin feature/estimates",
    "const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);\nexport default sum;\n",
]

CORPUS = {"English": ENGLISH, "Russian": RUSSIAN, "code": CODE}
