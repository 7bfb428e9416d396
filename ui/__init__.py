"""ui: the Gradio chat page over app/ (``retnet-rag ui``). Thin: every answer, document and session goes
through the app; this package only lays out the page and keeps each browser's things apart.

Rooms: workspace (what all users share), users (per-browser sessions and collections), uploads,
render (what the page shows), handlers (events), app (layout, queue, launch).
"""
