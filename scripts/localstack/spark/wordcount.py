"""Word count over a text baked into the image: one line per word, ``WORD<TAB>COUNT``, sorted by word.

    spark-submit /opt/spark/work-dir/wordcount.py [FILE] [PARTITIONS]

FILE defaults to words.txt beside this script (a ``file://`` path: every executor reads its own copy from the
image); the work is split into PARTITIONS (default 4) so that several executors get a share.
"""

import os
import sys

from pyspark.sql import SparkSession

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "words.txt")
    partitions = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    spark = SparkSession.builder.appName("imagegate-wordcount").getOrCreate()
    try:
        lines = spark.sparkContext.textFile("file://" + path, partitions)
        counts = (lines.flatMap(lambda line: line.lower().split())
                  .map(lambda word: (word, 1))
                  .reduceByKey(lambda a, b: a + b, partitions))
        result = sorted(counts.collect())
        for word, count in result:
            print(f"{word}\t{count}")
        print(f"wordcount: {len(result)} distinct words, {sum(c for _, c in result)} in all", flush=True)
    finally:
        spark.stop()


if __name__ == "__main__":
    main()
