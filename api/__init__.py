"""Prediction API: Flask app factory, model hot reload, waitress entry point, the API as a background process.

Run it with ``python -m api.serve``; build the WSGI app with ``api.app.create_app``.
"""
