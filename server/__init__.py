"""OpenBWV evidence server: receives sealed segments from docks, verifies, stores, and signs receipts.

app.py (routes and middlewares) and tus.py (the tus 1.0 upload protocol) face
the network; service.py holds the state behind them; ingest.py takes a
finished upload into evidence; blobstore.py (segment bytes) and db.py
(metadata) are the two storage seams; auth.py the dock tokens; errors.py the
one exception tree; command.py is `bwv server`.  Protocol: docs/upload-protocol.md.
"""
