"""neurolab's dashboard: its pages in order, named in the navigation by their files (``pages/0_Home.py`` is "Home",
at the root URL; ``pages/2_Operand_Grid.py`` is "Operand Grid" at ``/Operand_Grid``).

Started as ``python app.py [streamlit options]`` (``make run``, the Docker image, the browser tests), it first loads
the default model and answers the home page's default prompt, then serves this file in the same process: the first
page a user opens finds the model loaded and the trace warm, instead of loading them while the user waits.
``streamlit run app.py`` still works, loading the model on the first visit.
"""

import sys
from pathlib import Path

import streamlit as st
from streamlit import runtime

PAGES = sorted((Path(__file__).parent / "pages").glob("[0-9]_*.py"))


def serve(options: list[str]) -> None:
    """Load what the first page needs, then ``streamlit run`` this file with ``options`` in this process."""
    import anyio._backends._asyncio  # noqa: F401  the server's async stack before nnsight (whose import adds a
    from streamlit.web import cli  # `save` to objects that anyio's classes, imported lazily later, refuse)

    from neurolab.analysis.predict import EXAMPLE_PROMPT, report
    from neurolab.models.loading import load_model
    from neurolab.viz import figures, heuristic_bag  # noqa: F401  the home page's charts (plotly) imported now

    print("Loading the embedded model before serving ...", flush=True)
    report(load_model(), EXAMPLE_PROMPT)  # the default model, as a new session's sidebar asks for it
    cli.main(["run", __file__, *options], prog_name="streamlit")


if runtime.exists():
    st.navigation([st.Page(f"pages/{path.name}", default=path.name.startswith("0_")) for path in PAGES]).run()
elif __name__ == "__main__":
    serve(sys.argv[1:])
