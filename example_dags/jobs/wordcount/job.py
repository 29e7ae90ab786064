"""Count words in a text file and print a JSON summary (the example job)."""

import collections
import json
import re
import sys


def main(path: str) -> None:
    with open(path, encoding="utf-8") as handle:
        words = re.findall(r"[a-z']+", handle.read().lower())
    top = collections.Counter(words).most_common(3)
    print(json.dumps({"file": path, "words": len(words), "top": top}))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else __file__)
