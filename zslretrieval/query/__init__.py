"""Query the index: attribute descriptions, class names, descriptor files or example images.

    run_query(QueryConfig([QuerySpec("attributes", "stripes,water")], index="awa1")) -> QueryRun
    open_engine("awa1").run(specs, k, options=SearchOptions(feedback=Feedback((12,), (7,)),
                                                            filter=SearchFilter(folder="/photos/2024")))
    (docs/python-api.md: index, query, feedback, filters, relevance, export)
    engine_map(model, card, dataset) -> (mAP, per-class AP)   # benchmark mAP through this path
"""
from .._lazy import lazy_getattr
from .api import QueryConfig, QueryRun, run_query
from .engine import Hit, QueryEngine, QueryResult, open_engine
from .feedback import DEFAULT_WEIGHTS, Feedback, RocchioWeights
from .filters import SearchFilter
from .output import FORMATS, format_results, format_table, render_html, results_to_json, write_html
from .refined import SearchOptions, search_options
from .spec import KINDS, QuerySpec, parse_query_line, read_batch_file
from .vocab import (AttributeTerm, UnknownQueryNameError, Vocabulary, build_attribute_vector, normalise_name,
                    normalise_semantics, parse_attribute_terms, read_attribute_file)

# benchmark_map measures the engine on benchmark datasets (torch, data/, models/): loaded on first use,
# so that a query process never imports it
__getattr__ = lazy_getattr(__name__, {"engine_map": "benchmark_map", "engine_maps": "benchmark_map"})

__all__ = ["DEFAULT_WEIGHTS", "FORMATS", "Feedback", "RocchioWeights", "SearchFilter", "SearchOptions", "format_results",
           "search_options",
           "KINDS", "AttributeTerm", "Hit", "QueryConfig", "QueryEngine", "QueryResult", "QueryRun", "QuerySpec",
           "UnknownQueryNameError", "Vocabulary", "build_attribute_vector", "engine_map", "engine_maps", "format_table",
           "normalise_name", "normalise_semantics", "open_engine", "parse_attribute_terms", "parse_query_line",
           "read_attribute_file", "read_batch_file", "render_html", "results_to_json", "run_query", "write_html"]
