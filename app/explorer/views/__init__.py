"""The explorer's pages (run by `main.py` through st.navigation; not importable modules)."""
