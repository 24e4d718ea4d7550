"""neurolab's analysis core: models, captures, sweeps, the store and the heuristics method. Never imports streamlit.

Entry points: :func:`neurolab.models.loading.load_model`, :func:`neurolab.capture.trace.run`,
:func:`neurolab.analysis.sweep.run_sweep`, :func:`neurolab.analysis.classification.classify_operator`, and the CLI
``python -m neurolab``.
"""

__version__ = "0.1.0"
