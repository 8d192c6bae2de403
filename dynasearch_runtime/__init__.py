"""dynasearch_runtime: the device runtime, a product of its own at the bottom of the house (it imports
nothing of dynabert, predictors, search or dynasearch; they import it): the timing protocol and records
`dynasearch measure` and the kit's runner share, the bundle loader, the bounds table, and the server.

Standard library, numpy and onnxruntime only (onnxruntime imported lazily, never torch or pandas;
the server's two modules also take the `serve` extra, imported inside the functions that need it),
relative imports only, Python 3.8 syntax (the server: 3.9+): `dynasearch kit` copies this folder as it
is into the kit (beside a three-line runner.py), and `export --bundle` into the bundle as
BUNDLE/dynasearch_runtime/, so a device without torch times, loads and serves its models with the
very same code.

Which copy a process gets: Python imports a package once per process. Run as a script
(`python BUNDLE/dynasearch_bundle.py ...`) or imported where dynasearch is not installed, the bundle's
loader uses the bundle's own copy (its folder comes first on the path); in a process that already
imported dynasearch (or this package), `import dynasearch_bundle` gets the installed copy, which reads
every bundle version up to its own (tests/search/test_bundle.py checks both).

    errors       the root of every user-facing error (DynasearchError) and MeasurementError
    schema       the records schema and files (read and checked, rewritten atomically, raw timings)
    records_check  one records row's check: types, bounds (RECORD_BOUNDS), shape, sub-network, protocol
    field_bounds   which bounds kind each number of a JSON file is (Field maps) and the walk checking them
    fingerprint  the environment fingerprint, settings hashes, the onnxruntime session and feeds
    speed        the per-round speed correction
    protocol     the timing protocol (Protocol, interleaved rounds, statistics)
    driver       chunks, the anchor and the speed fit over a run
    runner       the kit's command line (reads kit.json, times models/*.onnx)
    bounds       the bounds table: every limit a number a user types or a file holds must meet
    bundle, bundle_index, bundle_cli   the deployment bundle's loader, its index checks, its command line
    units        latency with a unit ("12ms")
    policy, simulator   the serving policy and its discrete-event simulator
    calibrate    the serving latency table measured on the serving machine (cached)
    server, serve_bundle   the dynamic server (the serve extra) and a bundle's front served by it
    serve_ray    the same app as a Ray Serve deployment (the ray extra; the only module that imports ray)

Nothing is re-exported here: import each name from its module.
"""
