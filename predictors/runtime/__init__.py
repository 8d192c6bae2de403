"""The device runtime: the code `dynasearch measure` and the kit's runner share.

Standard library, numpy and onnxruntime only (onnxruntime imported lazily, never torch or pandas),
relative imports only, Python 3.8 syntax: `dynasearch kit` copies this folder as it is into the
kit (beside a three-line runner.py), so a device without torch times its models with the very same
protocol and writes the very same records.

    errors       the root of every user-facing error (DynasearchError) and MeasurementError
    schema       the records schema and files (read and checked, rewritten atomically, raw timings)
    records_check  one records row's check: types, bounds (RECORD_BOUNDS), shape, sub-network, protocol
    field_bounds   which bounds kind each number of a JSON file is (Field maps) and the walk checking them
    fingerprint  the environment fingerprint, settings hashes, the onnxruntime session and feeds
    speed        the per-round speed correction
    protocol     the timing protocol (Protocol, interleaved rounds, statistics)
    driver       chunks, the anchor and the speed fit over a run
    runner       the kit's command line (reads kit.json, times models/*.onnx)

Nothing is re-exported here: import each name from its module.
"""
