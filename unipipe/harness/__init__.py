"""The conformance harness: the same pipeline on every backend, compared with the reference runner.

Layout (one job per module):

- :mod:`~unipipe.harness.cases`: conformance cases as data (``comparisons/cases/<id>/case.yaml``).
- :mod:`~unipipe.harness.receivers`: real alert receivers on 127.0.0.1 (HTTP, SMTP, callbacks).
- :mod:`~unipipe.harness.worker`: the fresh subprocess that runs one case on one backend.
- :mod:`~unipipe.harness.normalise`: what happened, as one trace shape for every backend.
- :mod:`~unipipe.harness.compare`: trace against the case's expectations and the reference.
- :mod:`~unipipe.harness.execute`: runs cases x backends, with progress, into outcomes.
- :mod:`~unipipe.harness.report`: Markdown table, HTML page with attempt timelines, summary JSON.
- :mod:`~unipipe.harness.matrix`: ``comparisons/MATRIX.md`` from declarations plus recorded results.
- :mod:`~unipipe.harness.cli`: ``unipipe conform``.

Nothing here imports an orchestrator; backends run in worker subprocesses.
"""
