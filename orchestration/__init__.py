"""freshrank's orchestration: the Dagster code location, the command line and the serving API.

Every process that runs freshrank's code (the `freshrank` command, the Dagster run workers and
code server that load orchestration.definitions, the API) imports this package before Dagster's
dbt integration, dbt and pandas, which create hundreds of thousands of long-lived objects. With
CPython's default collection thresholds (700, 10, 10) every full collection walks all of them
again: a cold `freshrank refresh` spent 1.1 s collecting, most of it in 7 full collections. With
the youngest generation's threshold at 10,000 it spent 0.3-0.4 s. Arrays, frames and query
results live outside the collector, so memory does not follow the threshold.
"""

import gc

GC_THRESHOLDS = (10_000, 10, 10)  # CPython's default is (700, 10, 10)

gc.set_threshold(*GC_THRESHOLDS)
