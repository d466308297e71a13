"""MapReduce in plain Python on the farm: chunks, map, emit, combine, reduce, write.

    from corral.mapreduce import MapReduce, TextFiles

    class WordCount(MapReduce):
        def chunks(self):
            return TextFiles(["texts/"], chunk_size="8M")
        def map(self, offset, line):
            for word in line.split():
                self.emit(word, 1)
        def combine(self, word, counts):
            self.emit(word, sum(counts))
        def reduce(self, word, counts):
            self.emit(word, sum(counts))

    WordCount().run(reducers=4)          # on the farm; or run(local=True)

Built only on the public client API (`corral.client`). Streaming mode runs existing
programs as mapper, combiner and reducer (Hadoop streaming's contract): `Streaming`.
"""

from ._job import MapReduce, MapReduceError
from ._keys import BadKey
from ._streaming import Streaming, StreamingError
from ._text import TextChunk, TextFiles

__all__ = [
    "BadKey",
    "MapReduce",
    "MapReduceError",
    "Streaming",
    "StreamingError",
    "TextChunk",
    "TextFiles",
]
