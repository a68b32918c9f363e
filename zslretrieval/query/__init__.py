"""Query the index: attribute descriptions, class names, descriptor files or example images.

    run_query(QueryConfig([QuerySpec("attributes", "stripes,water")], index="awa1")) -> QueryRun
    engine_map(model, card, dataset) -> (mAP, per-class AP)   # benchmark mAP through this path
"""
from .api import QueryConfig, QueryRun, run_query
from .engine import Hit, QueryEngine, QueryResult, open_engine
from .benchmark_map import engine_map, engine_maps
from .output import format_table, render_html, results_to_json, write_html
from .spec import KINDS, QuerySpec, parse_query_line, read_batch_file
from .vocab import (AttributeTerm, UnknownQueryNameError, Vocabulary, build_attribute_vector, normalise_name,
                    normalise_semantics, parse_attribute_terms, read_attribute_file)

__all__ = ["KINDS", "AttributeTerm", "Hit", "QueryConfig", "QueryEngine", "QueryResult", "QueryRun", "QuerySpec",
           "UnknownQueryNameError", "Vocabulary", "build_attribute_vector", "engine_map", "engine_maps", "format_table",
           "normalise_name", "normalise_semantics", "open_engine", "parse_attribute_terms", "parse_query_line",
           "read_attribute_file", "read_batch_file", "render_html", "results_to_json", "run_query", "write_html"]
