"""Passages and the ranked search over them: built once per project and kept with it.

``passages`` splits a document's text on page and paragraph boundaries, keeping where each
passage lies; ``index`` ranks them against a question with SQLite's FTS5 (BM25). Nothing
here imports the store or the engine: the store keeps an index, the engine reads one.
"""
