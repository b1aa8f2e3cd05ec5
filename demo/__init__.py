"""The browser demo's logic (`demo.actions`), kept apart from its Gradio layout in `app.py`."""
