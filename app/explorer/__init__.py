"""The Streamlit feature explorer (`saekit explore DB`): `main.py` is the entry point."""
