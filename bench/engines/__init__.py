"""One module per engine; each exposes a subclass of :class:`bench.engines.base.BenchEngine`.

Engine modules are imported lazily (by name) so a run needs only the packages of the
engines it benchmarks. Keep this file free of imports: Temporal's workflow sandbox
re-imports ``bench.engines.temporal_workflows`` and with it this package.
"""

ENGINES: dict[str, tuple[str, str]] = {
    # name: (module, class)
    "legato-sqlite": ("bench.engines.legato_embedded", "LegatoEmbedded"),
    "legato-pg-1": ("bench.engines.legato_pg", "LegatoPg1"),
    "legato-pg-2": ("bench.engines.legato_pg", "LegatoPg2"),
    "legato-pg-4": ("bench.engines.legato_pg", "LegatoPg4"),
    "dbos-sqlite": ("bench.engines.dbos_engine", "DbosSqlite"),
    "dbos-pg": ("bench.engines.dbos_engine", "DbosPg"),
    "temporal": ("bench.engines.temporal_engine", "TemporalDev"),
}
