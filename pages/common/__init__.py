"""What the pages share besides widgets; a folder of its own, since Streamlit lists every file in pages/ as a page."""
