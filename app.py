"""neurolab's dashboard: its pages in order, named in the navigation by their files (``pages/0_Home.py`` is "Home",
at the root URL; ``pages/2_Operand_Grid.py`` is "Operand Grid" at ``/Operand_Grid``)."""

from pathlib import Path

import streamlit as st

PAGES = sorted((Path(__file__).parent / "pages").glob("[0-9]_*.py"))
st.navigation([st.Page(f"pages/{path.name}", default=path.name.startswith("0_")) for path in PAGES]).run()
