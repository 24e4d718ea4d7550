"""neurolab's analysis core: models, captures, sweeps, the store and the heuristics method. Never imports streamlit.

Entry points: :func:`neurolab.model.load_model`, :func:`neurolab.capture.run`, :func:`neurolab.sweep.run_sweep`,
:func:`neurolab.classification.classify_operator`, and the CLI ``python -m neurolab``.
"""

__version__ = "0.1.0"
