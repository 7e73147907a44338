"""Prediction API: Flask app factory, onnxruntime predictor, model hot reload, waitress entry point.

Run it with ``python -m api.serve``; build the WSGI app with ``api.app.create_app``.
"""
