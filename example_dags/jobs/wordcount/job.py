"""Count words in a text file and print a JSON summary (the example job).

Words are folded to ASCII first (``text_unidecode``, the job's one dependency), so "caf\u00e9" and "cafe"
count as one word.
"""

import collections
import json
import re
import sys

from text_unidecode import unidecode


def main(path: str) -> None:
    with open(path, encoding="utf-8") as handle:
        words = re.findall(r"[a-z']+", unidecode(handle.read()).lower())
    top = collections.Counter(words).most_common(3)
    print(json.dumps({"file": path, "words": len(words), "top": top}))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else __file__)
