"""zslretrieval: zero-shot image retrieval.

Data flow, one subpackage per stage:
    images -> features (``features``) -> embedding model (``models``)
    -> index + catalog (``index``) -> query (``query``) -> metrics (``metrics``)
Benchmarks and user datasets live in ``data``.
"""
__version__ = "0.1.0"
